# sealload: the SMTP load generator and sink (issue #7, docs/SEALLOAD.md).
# The modules are a library so tests/tools can link them; the program is
# tools/sealload/sealload.c.  It reuses core's SMTP grammar and DATA
# state machine (sg_smtp) for the sink, and OpenSSL's CMS for its checks.
find_package(OpenSSL 3 REQUIRED)
add_library(sg_sealload STATIC
            ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_hist.c ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_msg.c
            ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_report.c ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_session.c
            ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_client.c ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_check.c
            ${CMAKE_CURRENT_LIST_DIR}/sealload/sl_sink.c)
target_link_libraries(sg_sealload PUBLIC sg_util sg_smtp PkgConfig::UV OpenSSL::Crypto Threads::Threads m)
add_executable(sealload ${CMAKE_CURRENT_LIST_DIR}/sealload/sealload.c)
target_link_libraries(sealload PRIVATE sg_sealload ${SEALGATE_MALLOC_LIBS})
