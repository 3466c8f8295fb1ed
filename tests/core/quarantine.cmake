# Unit tests for core/quarantine.c (held messages, issue #6): real files in
# a temporary folder.
sg_unit_test(test_quarantine ${CMAKE_CURRENT_SOURCE_DIR}/test_quarantine.c sg_quarantine)
# quarantine_put: a test helper (not installed) that holds a message as the
# daemon's quarantine action does; tests/integration/test_quarantine_cli.py
# seeds quarantines with it.
add_executable(quarantine_put ${CMAKE_CURRENT_SOURCE_DIR}/quarantine_put.c)
target_link_libraries(quarantine_put PRIVATE sg_quarantine)
set_target_properties(quarantine_put PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
