// A minimal unpickler for the pickles `torch.save` writes (protocol 2, plus the
// few protocol 4/5 opcodes a newer Python may emit). It executes no code: it
// builds a tree of plain values in which a call (REDUCE) is only recorded, never
// performed, so the caller decides what each accepted global means. Globals are
// checked against the caller's allow-list as soon as they are read.
//
// Memory is linear in the pickle's length: every opcode creates at most one
// value, and every length is checked against the bytes that remain.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace encodec::pickle {

// A malformed pickle or an unsupported construct; the message says which and
// where (byte offset), without the file name (the caller adds it).
class PickleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Value {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,        // str, UTF-8
    kBytes,
    kTuple,
    kList,
    kDict,
    kGlobal,        // text = "module.name"
    kPersistentId,  // items = {the id}
    kCall,          // items = {callable, args tuple}; entries = its __setitem__ calls
  };

  Kind kind = Kind::kNone;
  int64_t integer = 0;  // kInt, kBool
  double real = 0.0;    // kFloat
  std::string text;     // kString, kBytes, kGlobal
  std::vector<const Value*> items;
  std::vector<std::pair<const Value*, const Value*>> entries;  // kDict, kCall, in order
  const Value* state = nullptr;  // kCall: the argument of BUILD, if any

  bool is(Kind k) const { return kind == k; }
  bool is_global(std::string_view qualified_name) const {
    return kind == Kind::kGlobal && text == qualified_name;
  }
};

// The values of one pickle. They live as long as the document; pointers into it
// stay valid when it is moved.
struct Document {
  std::vector<std::unique_ptr<Value>> arena;
  const Value* root = nullptr;
};

// Decides whether a global ("module.name") may appear in the pickle.
using GlobalFilter = std::function<bool(const std::string& qualified_name)>;

// Parses `bytes` up to its STOP opcode. Throws PickleError.
Document parse(std::string_view bytes, const GlobalFilter& is_allowed_global);

}  // namespace encodec::pickle
