# REST API tests: a real HttpServer on 127.0.0.1:0 over an in-process ControlPlane and a real
# SqliteStore. Include from tests/integration/CMakeLists.txt:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/http_api_test.cmake)
include(GoogleTest)
add_executable(muster_http_api_test
  ${CMAKE_CURRENT_LIST_DIR}/http_admin_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/http_api_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/http_audit_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/http_events_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/http_transport_test.cc)
target_link_libraries(muster_http_api_test PRIVATE
  muster_server_http muster_store_sqlite muster_store_fs SQLite::SQLite3 CURL::libcurl Boost::json
  GTest::gtest_main)
gtest_discover_tests(muster_http_api_test DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 120)
