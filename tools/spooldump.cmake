# spooldump: print and check spool files (the format's dump tool, like postcat).
add_executable(spooldump ${CMAKE_CURRENT_SOURCE_DIR}/spooldump.c)
target_link_libraries(spooldump PRIVATE sg_spool_record)
target_link_libraries(spooldump PRIVATE ${SEALGATE_MALLOC_LIBS})
