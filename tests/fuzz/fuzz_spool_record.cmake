# Fuzz the spool file reader; seeds in corpus/fuzz_spool_record/.
sg_fuzz_target(fuzz_spool_record ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_spool_record.c sg_spool_record)
