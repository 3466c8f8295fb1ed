# Fuzz crypto/incoming (S/MIME layer detection, CMS input through verify and
# decrypt, result header, composition); seeds in corpus/fuzz_incoming/.
sg_fuzz_target(fuzz_incoming ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_incoming.c sg_crypto)
