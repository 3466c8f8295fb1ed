add_executable(sealctl ${CMAKE_CURRENT_LIST_DIR}/sealctl.c)
target_link_libraries(sealctl PRIVATE sg_config sg_control sg_spool ${SEALGATE_MALLOC_LIBS})
