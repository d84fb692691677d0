#include "sandbox_book.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace microvm::daemon {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool safeId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

}  // namespace

Result<SandboxBook> SandboxBook::open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error(ErrorCode::kIo, "create " + dir.string() + ": " + ec.message());
  SandboxBook book(dir);
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    json j = json::parse(text.str(), nullptr, false);
    if (!j.is_object()) continue;  // a torn file from a crash: nothing to keep
    SandboxNote note;
    note.id = j.value("id", std::string());
    if (!safeId(note.id)) continue;
    note.source = j.value("source", std::string());
    note.expires_at = j.value("expires_at", int64_t{0});
    if (j.contains("labels") && j["labels"].is_object()) {
      for (const auto& [key, value] : j["labels"].items()) {
        if (value.is_string()) note.labels[key] = value.get<std::string>();
      }
    }
    book.notes_[note.id] = std::move(note);
  }
  return book;
}

Result<void> SandboxBook::put(const SandboxNote& note) {
  if (!safeId(note.id)) return Error(ErrorCode::kInvalidArgument, "bad sandbox id");
  json j = {{"id", note.id}, {"labels", note.labels}, {"source", note.source}, {"expires_at", note.expires_at}};
  fs::path path = dir_ / (note.id + ".json");
  fs::path tmp = dir_ / (note.id + ".json.tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << "\n";
    out.flush();
    if (!out) return Error(ErrorCode::kIo, "write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Error(ErrorCode::kIo, "rename " + tmp.string() + ": " + ec.message());
  std::lock_guard lock(mutex_);
  notes_[note.id] = note;
  return success();
}

std::optional<SandboxNote> SandboxBook::get(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = notes_.find(id);
  if (it == notes_.end()) return std::nullopt;
  return it->second;
}

void SandboxBook::remove(const std::string& id) {
  if (!safeId(id)) return;
  std::error_code ec;
  fs::remove(dir_ / (id + ".json"), ec);
  std::lock_guard lock(mutex_);
  notes_.erase(id);
}

std::vector<SandboxNote> SandboxBook::all() const {
  std::lock_guard lock(mutex_);
  std::vector<SandboxNote> out;
  for (const auto& [id, note] : notes_) out.push_back(note);
  return out;
}

}  // namespace microvm::daemon
