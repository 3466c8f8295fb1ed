# Unit tests for the SMTP command grammar and the DATA state machine.
sg_unit_test(test_smtp_parser ${CMAKE_CURRENT_SOURCE_DIR}/test_smtp_parser.c sg_smtp)
sg_unit_test(test_smtp_data ${CMAKE_CURRENT_SOURCE_DIR}/test_smtp_data.c sg_smtp)
