# Fuzz target for core/smtp_parser and core/smtp_data (untrusted SMTP input).
sg_fuzz_target(fuzz_smtp_parser ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_smtp_parser.c sg_smtp)
