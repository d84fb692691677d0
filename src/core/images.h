// Image plumbing shared by the Runtime's run path and its image commands.
#pragma once

#include <filesystem>
#include <string>

#include "image/image_store.h"
#include "microvm/runtime.h"

namespace microvm {

// The local image for `reference`, pulling it only if it is not there
// (Docker's default pull policy, "missing").
Result<ImageRecord> findOrPullImage(const std::filesystem::path& images_dir, const RuntimeOptions& settings,
                                    const std::string& reference, const std::string& platform);

}  // namespace microvm
