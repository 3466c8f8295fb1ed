# Fuzz core/filter (the filter language: programs, conditions, actions);
# seeds in corpus/fuzz_filter/.
sg_fuzz_target(fuzz_filter ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_filter.c sg_filter)
