// The zip archive and pickle torch.save writes for a state_dict, mirrored from
// what the reader (checkpoint.cpp, pickle.cpp) accepts and from the official
// files: protocol 2, an OrderedDict rebuilt with REDUCE, one
// `_rebuild_tensor_v2(persistent_id, offset, size, stride, False, OrderedDict())`
// per tensor, SETITEMS, no `_metadata` (load_state_dict treats it as optional).
#include "encodec/checkpoint_writer.h"

#include <zip.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint writer assumes a little-endian host"
#endif

namespace encodec {
namespace {

// The storage class torch.save names for a dtype (the reader's table, inverted).
const char* storage_class(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "FloatStorage";
    case torch::kFloat64: return "DoubleStorage";
    case torch::kFloat16: return "HalfStorage";
    case torch::kBFloat16: return "BFloat16Storage";
    case torch::kInt64: return "LongStorage";
    case torch::kInt32: return "IntStorage";
    case torch::kInt16: return "ShortStorage";
    case torch::kInt8: return "CharStorage";
    case torch::kUInt8: return "ByteStorage";
    case torch::kBool: return "BoolStorage";
    default: return nullptr;
  }
}

// Pickle opcodes, as named in CPython's Lib/pickletools.py.
class PickleBuilder {
 public:
  PickleBuilder() { bytes_ += "\x80\x02"; }  // PROTO 2

  void op(char opcode) { bytes_ += opcode; }
  void global(const std::string& module, const std::string& name) {
    bytes_ += 'c' + module + '\n' + name + '\n';
  }
  void text(const std::string& value) {  // BINUNICODE
    op('X');
    append_le(value.size(), 4);
    bytes_ += value;
  }
  void integer(int64_t value) {
    if (value >= 0 && value < 256) {
      op('K');  // BININT1
      append_le(static_cast<uint64_t>(value), 1);
    } else if (value >= INT32_MIN && value <= INT32_MAX) {
      op('J');  // BININT
      append_le(static_cast<uint32_t>(static_cast<int32_t>(value)), 4);
    } else {
      op('\x8a');  // LONG1, 8 bytes two's complement
      append_le(8, 1);
      append_le(static_cast<uint64_t>(value), 8);
    }
  }
  void int_tuple(const std::vector<int64_t>& values) {
    op('(');  // MARK
    for (int64_t value : values) integer(value);
    op('t');  // TUPLE
  }
  void empty_ordered_dict() {
    global("collections", "OrderedDict");
    op(')');  // EMPTY_TUPLE
    op('R');  // REDUCE
  }
  std::string finish() {
    op('.');  // STOP
    return std::move(bytes_);
  }

 private:
  void append_le(uint64_t value, int width) {
    for (int i = 0; i < width; ++i) bytes_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }
  std::string bytes_;
};

struct ArchiveDiscarder {
  void operator()(zip_t* archive) const {
    if (archive) zip_discard(archive);
  }
};

}  // namespace

void save_checkpoint(const std::string& path, const StateDict& state) {
  auto fail = [&path](const std::string& why) -> void {
    throw CheckpointError("cannot write checkpoint " + path + ": " + why);
  };
  const std::string top = std::filesystem::path(path).stem().string();
  if (top.empty()) fail("the file name has no stem to name the archive's folder");

  // The tensors' bytes must live until zip_close, which reads them.
  std::vector<torch::Tensor> storages;
  PickleBuilder pickle;
  pickle.empty_ordered_dict();
  pickle.op('(');  // MARK for SETITEMS
  for (const auto& [name, tensor] : state) {
    if (name.empty() || name.find('\0') != std::string::npos) fail("a tensor has an empty or NUL-holding name");
    if (!tensor.defined()) fail("tensor '" + name + "' is undefined");
    const char* storage = storage_class(tensor.scalar_type());
    if (storage == nullptr) fail("tensor '" + name + "' has unsupported dtype " + std::string(c10::toString(tensor.scalar_type())));
    torch::Tensor data = tensor.detach().to(torch::kCPU).contiguous();
    const std::string key = std::to_string(storages.size());
    pickle.text(name);
    pickle.global("torch._utils", "_rebuild_tensor_v2");
    pickle.op('(');  // MARK: the call's arguments
    pickle.op('(');  // MARK: the persistent id
    pickle.text("storage");
    pickle.global("torch", storage);
    pickle.text(key);
    pickle.text("cpu");
    pickle.integer(data.numel());
    pickle.op('t');
    pickle.op('Q');  // BINPERSID
    pickle.integer(0);  // storage offset
    pickle.int_tuple(data.sizes().vec());
    pickle.int_tuple(data.strides().vec());
    pickle.op('\x89');  // NEWFALSE: requires_grad
    pickle.empty_ordered_dict();  // backward hooks
    pickle.op('t');
    pickle.op('R');
    storages.push_back(std::move(data));
  }
  pickle.op('u');  // SETITEMS
  const std::string pickle_bytes = pickle.finish();
  static const std::string kVersion = "3\n", kByteOrder = "little";

  int code = 0;
  std::unique_ptr<zip_t, ArchiveDiscarder> archive(zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code));
  if (!archive) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    fail(why);
  }
  auto add = [&](const std::string& entry, const void* data, size_t size) {
    zip_source_t* source = zip_source_buffer(archive.get(), data, size, 0);
    if (source == nullptr) fail(zip_strerror(archive.get()));
    const zip_int64_t index = zip_file_add(archive.get(), (top + "/" + entry).c_str(), source, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(source);
      fail(zip_strerror(archive.get()));
    }
    // Stored, as torch.save does: readers may map the storages in place.
    if (zip_set_file_compression(archive.get(), static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0) {
      fail(zip_strerror(archive.get()));
    }
  };
  add("data.pkl", pickle_bytes.data(), pickle_bytes.size());
  add("byteorder", kByteOrder.data(), kByteOrder.size());
  for (size_t i = 0; i < storages.size(); ++i) {
    add("data/" + std::to_string(i), storages[i].data_ptr(), storages[i].nbytes());
  }
  add("version", kVersion.data(), kVersion.size());
  if (zip_close(archive.get()) != 0) fail(zip_strerror(archive.get()));
  archive.release();  // closed: nothing left to discard
}

}  // namespace encodec
