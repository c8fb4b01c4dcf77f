#include "fs/control/begin_options.h"

#include <charconv>
#include <climits>

namespace ktmfs::fs {
namespace {

Status Invalid(const std::string& why) {
  return Status::InvalidArgument("user.ktmfs.tx.begin: " + why);
}

template <typename T>
bool ParseNumber(std::string_view text, T max, T* out) {
  if (text.empty() || text[0] == '+' || text[0] == '-') return false;
  unsigned long long v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() ||
      v > static_cast<unsigned long long>(max))
    return false;
  *out = static_cast<T>(v);
  return true;
}

}  // namespace

Result<BeginOptions> ParseBeginOptions(std::string_view value) {
  // setxattr values are bytes; a trailing NUL or newline (from `echo`, or C strings) is allowed.
  while (!value.empty() && (value.back() == '\0' || value.back() == '\n'))
    value.remove_suffix(1);

  BeginOptions opts;
  bool seen_scope = false, seen_pid = false, seen_timeout = false, seen_name = false;
  size_t i = 0;
  while (i < value.size()) {
    if (value[i] == ' ' || value[i] == '\t') {
      ++i;
      continue;
    }
    size_t eq = value.find('=', i);
    size_t space = value.find_first_of(" \t", i);
    if (eq == std::string_view::npos || (space != std::string_view::npos && space < eq))
      return Invalid("expected key=value at '" + std::string(value.substr(i, space - i)) + "'");
    std::string_view key = value.substr(i, eq - i);
    i = eq + 1;
    std::string text;
    if (i < value.size() && value[i] == '"') {
      ++i;
      bool closed = false;
      while (i < value.size()) {
        char c = value[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < value.size()) c = value[i++];
        text.push_back(c);
      }
      if (!closed) return Invalid("unterminated quote in value of '" + std::string(key) + "'");
      if (i < value.size() && value[i] != ' ' && value[i] != '\t')
        return Invalid("expected a space after the quoted value of '" + std::string(key) + "'");
    } else {
      size_t end = value.find_first_of(" \t", i);
      if (end == std::string_view::npos) end = value.size();
      text = std::string(value.substr(i, end - i));
      i = end;
    }
    if (text.find('\0') != std::string::npos) return Invalid("NUL byte in a value");

    auto once = [&](bool& seen) {
      if (seen) return false;
      seen = true;
      return true;
    };
    if (key == "scope") {
      if (!once(seen_scope)) return Invalid("'scope' given twice");
      if (text == "thread")
        opts.scope = Scope::kThread;
      else if (text == "process")
        opts.scope = Scope::kProcess;
      else if (text == "tree")
        opts.scope = Scope::kTree;
      else
        return Invalid("scope must be thread, process or tree, not '" + text + "'");
    } else if (key == "pid") {
      if (!once(seen_pid)) return Invalid("'pid' given twice");
      if (!ParseNumber<pid_t>(text, INT_MAX, &opts.pid) || opts.pid == 0)
        return Invalid("pid must be a positive process id, not '" + text + "'");
    } else if (key == "timeout") {
      if (!once(seen_timeout)) return Invalid("'timeout' given twice");
      if (!ParseNumber<uint32_t>(text, UINT32_MAX, &opts.timeout_sec) || opts.timeout_sec == 0)
        return Invalid("timeout must be a positive number of seconds, not '" + text + "'");
    } else if (key == "name") {
      if (!once(seen_name)) return Invalid("'name' given twice");
      if (text.size() > kMaxBeginNameBytes)
        return Invalid("name is longer than " + std::to_string(kMaxBeginNameBytes) + " bytes");
      opts.name = std::move(text);
    } else {
      return Invalid("unknown key '" + std::string(key) + "'");
    }
  }
  return opts;
}

std::string FormatBeginOptions(const BeginOptions& o) {
  std::string out;
  auto add = [&out](const std::string& pair) {
    if (!out.empty()) out += ' ';
    out += pair;
  };
  if (o.scope != Scope::kProcess) add(o.scope == Scope::kThread ? "scope=thread" : "scope=tree");
  if (o.pid != 0) add("pid=" + std::to_string(o.pid));
  if (o.timeout_sec != 0) add("timeout=" + std::to_string(o.timeout_sec));
  if (!o.name.empty()) {
    std::string quoted = "name=\"";
    for (char c : o.name) {
      if (c == '"' || c == '\\') quoted += '\\';
      quoted += c;
    }
    add(quoted + '"');
  }
  return out;
}

}  // namespace ktmfs::fs
