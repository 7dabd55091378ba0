// The pickle stack machine. Opcode meanings follow CPython's Lib/pickle.py and
// Lib/pickletools.py; only the opcodes torch.save state_dicts use are known, and
// anything else is an error rather than a guess.
#include "pickle.h"

#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace encodec::pickle {
namespace {

using Kind = Value::Kind;

// "0x63 ('c')": the hex value, and the character pickletools lists it under.
std::string describe_opcode(uint8_t opcode) {
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", opcode);
  std::string text = hex;
  if (opcode >= 0x20 && opcode < 0x7f) text += std::string(" ('") + static_cast<char>(opcode) + "')";
  return text;
}

class Parser {
 public:
  Parser(std::string_view bytes, const GlobalFilter& is_allowed_global)
      : bytes_(bytes), is_allowed_global_(is_allowed_global) {}

  Document run() {
    while (true) {
      opcode_offset_ = position_;
      const uint8_t opcode = read_u8();
      if (opcode == '.') break;  // STOP
      execute(opcode);
    }
    document_.root = pop();
    return std::move(document_);
  }

 private:
  void execute(uint8_t opcode) {
    switch (opcode) {
      case 0x80: read_u8(); return;                              // PROTO: any version
      case 0x95: read_bytes(8); return;                          // FRAME: only a size hint
      case '(': marks_.push_back(stack_.size()); return;         // MARK
      case '}': push(make(Kind::kDict)); return;                 // EMPTY_DICT
      case ']': push(make(Kind::kList)); return;                 // EMPTY_LIST
      case ')': push(make(Kind::kTuple)); return;                // EMPTY_TUPLE
      case 't': push_tuple(pop_to_mark()); return;               // TUPLE
      case 0x85: push_tuple(pop_n(1)); return;                   // TUPLE1
      case 0x86: push_tuple(pop_n(2)); return;                   // TUPLE2
      case 0x87: push_tuple(pop_n(3)); return;                   // TUPLE3
      case 'X': push_text(Kind::kString, read_le(4)); return;    // BINUNICODE
      case 0x8c: push_text(Kind::kString, read_le(1)); return;   // SHORT_BINUNICODE
      case 0x8d: push_text(Kind::kString, read_le(8)); return;   // BINUNICODE8
      case 'C': push_text(Kind::kBytes, read_le(1)); return;     // SHORT_BINBYTES
      case 'B': push_text(Kind::kBytes, read_le(4)); return;     // BINBYTES
      case 'c': {                                                // GLOBAL
        std::string module = read_line();
        push_global(module, read_line());
        return;
      }
      case 0x93: {                                               // STACK_GLOBAL
        const Value* name = pop();
        const Value* module = pop();
        if (!module->is(Kind::kString) || !name->is(Kind::kString)) fail("STACK_GLOBAL of non-strings");
        push_global(module->text, name->text);
        return;
      }
      case 'q': memo_[read_le(1)] = top(); return;               // BINPUT
      case 'r': memo_[read_le(4)] = top(); return;               // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); return;            // MEMOIZE
      case 'h': push(memo_get(read_le(1))); return;              // BINGET
      case 'j': push(memo_get(read_le(4))); return;              // LONG_BINGET
      case 'J': push_int(static_cast<int32_t>(read_le(4))); return;  // BININT
      case 'K': push_int(read_le(1)); return;                    // BININT1
      case 'M': push_int(read_le(2)); return;                    // BININT2
      case 0x8a: push_int(read_long1()); return;                 // LONG1
      case 'G': push_float(); return;                            // BINFLOAT
      case 'N': push(make(Kind::kNone)); return;                 // NONE
      case 0x88: push_bool(true); return;                        // NEWTRUE
      case 0x89: push_bool(false); return;                       // NEWFALSE
      case 'Q': {                                                // BINPERSID
        Value* id = make(Kind::kPersistentId);
        id->items.push_back(pop());
        push(id);
        return;
      }
      case 'R': {                                                // REDUCE: record, don't call
        const Value* args = pop();
        const Value* callable = pop();
        if (!callable->is(Kind::kGlobal) || !args->is(Kind::kTuple)) fail("REDUCE needs a global and a tuple");
        Value* call = make(Kind::kCall);
        call->items = {callable, args};
        push(call);
        return;
      }
      case 'b': {                                                // BUILD: keep the state, unused
        const Value* state = pop();
        Value* object = top();
        if (!object->is(Kind::kCall)) fail("BUILD on a value that is not an object");
        object->state = state;
        return;
      }
      case 's': {                                                // SETITEM
        const Value* value = pop();
        const Value* key = pop();
        set_items(top(), {key, value});
        return;
      }
      case 'u': set_items_from_mark(); return;                   // SETITEMS
      case 'a': {                                                // APPEND
        const Value* item = pop();
        list_top()->items.push_back(item);
        return;
      }
      case 'e': {                                                // APPENDS
        std::vector<const Value*> items = pop_to_mark();
        Value* list = list_top();
        list->items.insert(list->items.end(), items.begin(), items.end());
        return;
      }
      default:
        fail("unsupported pickle opcode " + describe_opcode(opcode));
    }
  }

  [[noreturn]] void fail(const std::string& problem) const {
    throw PickleError(problem + " at byte " + std::to_string(opcode_offset_) + " of the pickle");
  }

  // --- Reading the byte stream; every read is bounds-checked. -----------------

  std::string_view read_bytes(uint64_t count) {
    if (count > bytes_.size() - position_) fail("pickle ends in the middle of an opcode");
    std::string_view out = bytes_.substr(position_, count);
    position_ += count;
    return out;
  }
  uint8_t read_u8() {
    if (position_ >= bytes_.size()) fail("pickle ends without a STOP opcode");
    return static_cast<uint8_t>(bytes_[position_++]);
  }
  uint64_t read_le(int width) {  // unsigned little-endian integer of 1 to 8 bytes
    std::string_view raw = read_bytes(width);
    uint64_t value = 0;
    for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<uint8_t>(raw[i]);
    return value;
  }
  int64_t read_long1() {  // two's complement little-endian, as Python's int.to_bytes
    const uint64_t width = read_le(1);
    if (width > 8) fail("LONG1 integer wider than 64 bits");
    if (width == 0) return 0;
    uint64_t value = read_le(static_cast<int>(width));
    if (width < 8 && ((value >> (8 * width - 1)) & 1)) value |= ~uint64_t{0} << (8 * width);  // sign-extend
    return static_cast<int64_t>(value);
  }
  std::string read_line() {  // GLOBAL's operands end with '\n'
    const size_t end = bytes_.find('\n', position_);
    if (end == std::string_view::npos) fail("GLOBAL name without its newline");
    std::string line(bytes_.substr(position_, end - position_));
    position_ = end + 1;
    return line;
  }

  // --- The stack. A MARK hides everything below it until it is popped, as in
  // CPython's metastack, so reaching below the mark is an underflow. -------------

  Value* make(Kind kind) {
    document_.arena.push_back(std::make_unique<Value>());
    document_.arena.back()->kind = kind;
    return document_.arena.back().get();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* value) { stack_.push_back(value); }
  Value* top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  Value* pop() {
    Value* value = top();
    stack_.pop_back();
    return value;
  }
  std::vector<const Value*> pop_n(size_t count) {
    if (stack_.size() - floor() < count) fail("pickle stack underflow");
    std::vector<const Value*> out(stack_.end() - count, stack_.end());
    stack_.resize(stack_.size() - count);
    return out;
  }
  std::vector<const Value*> pop_to_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    std::vector<const Value*> out(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return out;
  }
  Value* memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " read before it was written");
    return it->second;
  }

  // --- Building values. ----------------------------------------------------------

  void push_tuple(std::vector<const Value*> items) {
    Value* tuple = make(Kind::kTuple);
    tuple->items = std::move(items);
    push(tuple);
  }
  void push_text(Kind kind, uint64_t length) {
    Value* value = make(kind);
    value->text = std::string(read_bytes(length));
    push(value);
  }
  void push_global(const std::string& module, const std::string& name) {
    const std::string qualified = module + "." + name;
    if (!is_allowed_global_(qualified)) fail("unsupported global '" + qualified + "'");
    Value* value = make(Kind::kGlobal);
    value->text = qualified;
    push(value);
  }
  void push_int(int64_t integer) {
    Value* value = make(Kind::kInt);
    value->integer = integer;
    push(value);
  }
  void push_bool(bool flag) {
    Value* value = make(Kind::kBool);
    value->integer = flag;
    push(value);
  }
  void push_float() {  // BINFLOAT is big-endian
    std::string_view raw = read_bytes(8);
    uint64_t bits = 0;
    for (char byte : raw) bits = (bits << 8) | static_cast<uint8_t>(byte);
    Value* value = make(Kind::kFloat);
    std::memcpy(&value->real, &bits, sizeof bits);
    push(value);
  }
  // Dicts, and objects made by REDUCE (an OrderedDict), receive __setitem__.
  void set_items(Value* target, std::pair<const Value*, const Value*> entry) {
    if (!target->is(Kind::kDict) && !target->is(Kind::kCall)) fail("SETITEM on a value that is not a dict");
    target->entries.push_back(entry);
  }
  void set_items_from_mark() {
    std::vector<const Value*> flat = pop_to_mark();
    if (flat.size() % 2 != 0) fail("SETITEMS with an odd number of values");
    Value* target = top();
    for (size_t i = 0; i < flat.size(); i += 2) set_items(target, {flat[i], flat[i + 1]});
  }
  Value* list_top() {
    Value* list = top();
    if (!list->is(Kind::kList)) fail("APPEND on a value that is not a list");
    return list;
  }

  std::string_view bytes_;
  const GlobalFilter& is_allowed_global_;
  size_t position_ = 0;
  size_t opcode_offset_ = 0;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  Document document_;
};

}  // namespace

Document parse(std::string_view bytes, const GlobalFilter& is_allowed_global) {
  return Parser(bytes, is_allowed_global).run();
}

}  // namespace encodec::pickle
