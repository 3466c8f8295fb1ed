add_executable(sealctl ${CMAKE_CURRENT_LIST_DIR}/sealctl.c ${CMAKE_CURRENT_LIST_DIR}/sealctl_cert.c
               ${CMAKE_CURRENT_LIST_DIR}/sealctl_pubkey.c
               ${CMAKE_CURRENT_LIST_DIR}/sealctl_quarantine.c ${CMAKE_CURRENT_LIST_DIR}/sealctl_profile.c)
target_link_libraries(sealctl PRIVATE sg_config sg_control sg_spool sg_crypto sg_keystore sg_quarantine ${SEALGATE_MALLOC_LIBS})
