# Fuzz crypto/mime (header/entity split, re-encoding to canonical 7-bit);
# seeds in corpus/fuzz_mime/.
sg_fuzz_target(fuzz_mime ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_mime.c sg_mime)
