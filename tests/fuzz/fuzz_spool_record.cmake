# Fuzz the spool file reader; seeds in corpus/fuzz_spool_record/.
sg_fuzz_target(fuzz_spool_record ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_spool_record.c sg_spool_record)
# sg_fuzz_target instruments only the harness; without coverage feedback
# from the parser itself libFuzzer is blind, so instrument the library too
# (this file is read only in -DSEALGATE_FUZZ=ON builds).
target_compile_options(sg_spool_record PRIVATE -fsanitize=fuzzer-no-link)
