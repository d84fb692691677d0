// `microvm pull`, `images`, `rmi`, `image prune` and `login`.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <utility>

#include "cli_commands.h"

namespace microvm::cli {

namespace {

int cmdImages(const GlobalFlags& global, const std::string& format, bool quiet) {
  if (format != "table" && format != "json") return fail("unknown format \"" + format + "\" (want table or json)");
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  auto images = runtime->images();
  if (!images) return fail(images.error());
  if (quiet) {
    for (const auto& image : *images) std::cout << image.reference << "\n";
    return 0;
  }
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& image : *images) {
      list.push_back({{"reference", image.reference},
                      {"digest", image.digest},
                      {"size", image.size},
                      {"pulled_at", image.pulled_at},
                      {"entrypoint", image.entrypoint},
                      {"cmd", image.cmd},
                      {"env", image.env},
                      {"working_dir", image.working_dir},
                      {"user", image.user},
                      {"exposed_ports", image.exposed_ports}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-50s   %-19s   %-16s   %s\n", "REFERENCE", "DIGEST", "PULLED", "SIZE");
  for (const auto& image : *images) {
    std::printf("%-50s   %-19s   %-16s   %.1f MB\n", image.reference.c_str(), image.digest.substr(0, 19).c_str(),
                ago(image.pulled_at).c_str(), static_cast<double>(image.size) / 1e6);
  }
  return 0;
}

int cmdLogin(const GlobalFlags& global, const std::string& registry, const std::string& username, bool from_stdin) {
  std::string password;
  if (from_stdin) {
    std::getline(std::cin, password);
  } else if (const char* env = std::getenv("MICROVM_PASSWORD")) {
    password = env;
  } else {
    return fail("give the password with --password-stdin or $MICROVM_PASSWORD");
  }
  auto runtime = openRuntime(global);
  if (!runtime) return fail(runtime.error());
  if (auto saved = runtime->login(registry, username, password); !saved) return fail(saved.error());
  std::cout << "Login Succeeded\n";
  return 0;
}

}  // namespace

void addPullCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct PullFlags {
    std::vector<std::string> refs;
    std::string platform = "linux/amd64";
  };
  auto flags = std::make_shared<PullFlags>();
  auto* pull_cmd = app.add_subcommand("pull", "Pull images from a registry or an OCI layout (oci:PATH[:TAG])");
  pull_cmd->add_option("image", flags->refs, "Image reference")->required();
  pull_cmd->add_option("--platform", flags->platform, "Platform (default linux/amd64)");
  addPullFlags(*pull_cmd, global);
  commands.add(pull_cmd, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    return forEachVm(flags->refs, [&](const std::string& ref) -> Result<void> {
      auto image = runtime->pull(ref, flags->platform);
      if (!image) return std::move(image).error();
      return success();
    });
  });
}

void addImagesCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct ImagesFlags {
    std::string format;
    bool quiet = false;
  };
  auto flags = std::make_shared<ImagesFlags>();
  auto* images_cmd = app.add_subcommand("images", "List pulled images");
  images_cmd->add_option("--format", flags->format, "table (default) or json");
  images_cmd->add_flag("-q,--quiet", flags->quiet, "Only show references");
  commands.add(images_cmd, [&global, flags] {
    return cmdImages(global, flags->format.empty() ? "table" : flags->format, flags->quiet);
  });
}

void addRmiCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct RmiFlags {
    std::vector<std::string> refs;
    bool force = false;
  };
  auto flags = std::make_shared<RmiFlags>();
  auto* rmi_cmd = app.add_subcommand("rmi", "Remove images");
  rmi_cmd->add_option("image", flags->refs, "Image reference")->required();
  rmi_cmd->add_flag("-f,--force", flags->force, "Remove even if a VM uses it");
  commands.add(rmi_cmd, [&global, flags] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    return forEachVm(flags->refs, [&](const std::string& ref) { return runtime->removeImage(ref, flags->force); });
  });
}

void addImageCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  auto* image_cmd = app.add_subcommand("image", "Manage images");
  image_cmd->require_subcommand(1);
  auto* image_prune = image_cmd->add_subcommand("prune", "Remove image data no tag refers to");
  commands.add(image_prune, [&global] {
    auto runtime = openRuntime(global);
    if (!runtime) return fail(runtime.error());
    auto freed = runtime->pruneImages();
    if (!freed) return fail(freed.error());
    std::printf("Total reclaimed space: %.1f MB\n", static_cast<double>(*freed) / 1e6);
    return 0;
  });
}

void addLoginCommand(CLI::App& app, GlobalFlags& global, Commands& commands) {
  struct LoginFlags {
    std::string registry;
    std::string username;
    bool password_stdin = false;
  };
  auto flags = std::make_shared<LoginFlags>();
  auto* login_cmd = app.add_subcommand("login", "Store credentials for a registry");
  login_cmd->add_option("registry", flags->registry, "Registry host[:port]")->required();
  login_cmd->add_option("-u,--username", flags->username, "User name")->required();
  login_cmd->add_flag("--password-stdin", flags->password_stdin, "Read the password from stdin (else: $MICROVM_PASSWORD)");
  commands.add(login_cmd,
               [&global, flags] { return cmdLogin(global, flags->registry, flags->username, flags->password_stdin); });
}

}  // namespace microvm::cli
