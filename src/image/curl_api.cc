#include "image/curl_api.h"

#include <dlfcn.h>

namespace microvm {

namespace {

struct Loaded {
  CurlApi api{};
  std::string error;
};

// What every entry point does when libcurl is missing: nothing, and fail.
CURLcode failedSetopt(CURL*, CURLoption, ...) { return CURLE_FAILED_INIT; }
CURLcode failedGetinfo(CURL*, CURLINFO, ...) { return CURLE_FAILED_INIT; }

CurlApi unavailable() {
  CurlApi api{};
  api.global_init = [](long) { return CURLE_FAILED_INIT; };
  api.easy_init = []() -> CURL* { return nullptr; };
  api.easy_setopt = failedSetopt;
  api.easy_perform = [](CURL*) { return CURLE_FAILED_INIT; };
  api.easy_getinfo = failedGetinfo;
  api.easy_cleanup = [](CURL*) {};
  api.easy_strerror = [](CURLcode) { return "libcurl is not available"; };
  api.slist_append = [](curl_slist*, const char*) -> curl_slist* { return nullptr; };
  api.slist_free_all = [](curl_slist*) {};
  api.url = []() -> CURLU* { return nullptr; };
  api.url_set = [](CURLU*, CURLUPart, const char*, unsigned int) { return CURLUE_BAD_HANDLE; };
  api.url_get = [](CURLU*, CURLUPart, char**, unsigned int) { return CURLUE_BAD_HANDLE; };
  api.url_cleanup = [](CURLU*) {};
  api.free = [](void*) {};
  return api;
}

// Binds `name`; the first missing one is named in `error`.
template <typename Function>
bool bind(void* library, const char* name, Function& function, std::string& error) {
  // SAFETY: dlsym returns the address of the named libcurl function, whose
  // type curl.h declares and `Function` is (decltype of that declaration).
  function = reinterpret_cast<Function>(::dlsym(library, name));
  if (function == nullptr && error.empty()) error = std::string("libcurl.so.4 has no ") + name;
  return function != nullptr;
}

Loaded load() {
  Loaded loaded;
  void* library = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = ::dlerror();
    loaded.error = std::string("cannot load libcurl.so.4: ") + (why ? why : "unknown error");
    loaded.api = unavailable();
    return loaded;
  }
  CurlApi& api = loaded.api;
  std::string& error = loaded.error;
  bool all = bind(library, "curl_global_init", api.global_init, error) &&
             bind(library, "curl_easy_init", api.easy_init, error) &&
             bind(library, "curl_easy_setopt", api.easy_setopt, error) &&
             bind(library, "curl_easy_perform", api.easy_perform, error) &&
             bind(library, "curl_easy_getinfo", api.easy_getinfo, error) &&
             bind(library, "curl_easy_cleanup", api.easy_cleanup, error) &&
             bind(library, "curl_easy_strerror", api.easy_strerror, error) &&
             bind(library, "curl_slist_append", api.slist_append, error) &&
             bind(library, "curl_slist_free_all", api.slist_free_all, error) &&
             bind(library, "curl_url", api.url, error) && bind(library, "curl_url_set", api.url_set, error) &&
             bind(library, "curl_url_get", api.url_get, error) &&
             bind(library, "curl_url_cleanup", api.url_cleanup, error) && bind(library, "curl_free", api.free, error);
  if (!all) api = unavailable();  // the library stays loaded; nothing of it is called
  return loaded;
}

const Loaded& loaded() {
  static const Loaded instance = load();
  return instance;
}

}  // namespace

const CurlApi& libcurl() { return loaded().api; }
const std::string& libcurlError() { return loaded().error; }

}  // namespace microvm
