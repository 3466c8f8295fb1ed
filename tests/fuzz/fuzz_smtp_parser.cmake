# Fuzz target for core/smtp_parser and core/smtp_data (untrusted SMTP input).
sg_fuzz_target(fuzz_smtp_parser ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_smtp_parser.c sg_smtp)
# sg_fuzz_target instruments only the target's own source; without coverage
# feedback from the library under test libFuzzer is a blind random tester.
# fuzzer-no-link adds the coverage hooks without a second main().
target_compile_options(sg_smtp PRIVATE -fsanitize=fuzzer-no-link)
