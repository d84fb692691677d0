// libcurl is loaded on first use, and every entry point is bound.
#include "image/curl_api.h"

#include <gtest/gtest.h>

namespace microvm {
namespace {

TEST(CurlApiTest, LoadsLibcurlOnFirstUseAndParsesAUrlWithIt) {
  const CurlApi& api = libcurl();
  EXPECT_EQ(libcurlError(), "");
  EXPECT_STREQ(api.easy_strerror(CURLE_OK), "No error");
  CURLU* url = api.url();
  ASSERT_NE(url, nullptr);
  EXPECT_EQ(api.url_set(url, CURLUPART_URL, "http://127.0.0.1:5000/v2/", 0), CURLUE_OK);
  char* host = nullptr;
  ASSERT_EQ(api.url_get(url, CURLUPART_HOST, &host, 0), CURLUE_OK);
  EXPECT_STREQ(host, "127.0.0.1");
  api.free(host);
  api.url_cleanup(url);
  // The same table every time.
  EXPECT_EQ(&libcurl(), &api);
}

}  // namespace
}  // namespace microvm
