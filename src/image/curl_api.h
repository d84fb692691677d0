// libcurl's entry points, loaded with dlopen on first use: a command that
// never talks to a registry (exec, ps, a run of a cached image) never maps
// libcurl and the thirty-odd libraries it needs, which cost every CLI
// command about 12 ms of its start here. libcurl.so.4 is the soname of
// every libcurl4 build; the build's libcurl-dev depends on it.
#pragma once

#include <curl/curl.h>

#include <string>

namespace microvm {

struct CurlApi {
  decltype(&::curl_global_init) global_init;
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_perform) easy_perform;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_url) url;
  decltype(&::curl_url_set) url_set;
  decltype(&::curl_url_get) url_get;
  decltype(&::curl_url_cleanup) url_cleanup;
  decltype(&::curl_free) free;
};

// The API, loaded once. Where libcurl cannot be loaded every entry point
// fails (easy_init and url return null, the others an error code) and
// libcurlError() says why.
const CurlApi& libcurl();
// Empty once libcurl is loaded.
const std::string& libcurlError();

}  // namespace microvm
