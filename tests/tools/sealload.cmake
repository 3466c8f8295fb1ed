# Unit tests for sealload (tools/sealload): the latency histogram and the
# message generator (read back with core's smtp_data).  The program itself
# is tested end to end by tests/integration/test_sealload.py.
sg_unit_test(test_sl_hist ${CMAKE_CURRENT_SOURCE_DIR}/test_sl_hist.c sg_sealload)
sg_unit_test(test_sl_msg ${CMAKE_CURRENT_SOURCE_DIR}/test_sl_msg.c sg_sealload sg_smtp)
