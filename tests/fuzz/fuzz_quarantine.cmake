# Fuzz the quarantine file reader; seeds in corpus/fuzz_quarantine/.
sg_fuzz_target(fuzz_quarantine ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_quarantine.c sg_quarantine)
