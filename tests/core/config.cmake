# Unit tests for core/config.c.
sg_unit_test(test_config ${CMAKE_CURRENT_SOURCE_DIR}/test_config.c sg_config)
# The test injects allocation failures to show every error path frees what
# it allocated: malloc/calloc/strdup calls from the objects linked into the
# test (config.c included) go through __wrap_* in the test.
target_link_options(test_config PRIVATE
  -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=strdup)
