// Reads torch.save zip checkpoints: finds `<top>/data.pkl` (the top folder's
// name varies), parses it with the minimal unpickler, and turns each recorded
// `_rebuild_tensor_v2` call into a tensor copied out of its `<top>/data/<key>`
// storage. Every size, offset and stride from the pickle is checked against the
// bytes the storage really holds before anything is allocated, so a hostile or
// damaged file gets a CheckpointError, never a crash or a huge allocation.
#include "encodec/checkpoint.h"

#include <zip.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <vector>

#include "pickle.h"

// Storages are little-endian and copied as they are.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint reader assumes a little-endian host"
#endif

namespace encodec {
namespace {

using pickle::Value;
using Kind = Value::Kind;

constexpr const char* kOrderedDict = "collections.OrderedDict";
constexpr const char* kRebuildTensor = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";

// The storage classes torch.save names, by the dtype of their elements.
const std::map<std::string, torch::ScalarType>& storage_dtypes() {
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.FloatStorage", torch::kFloat32}, {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},  {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},    {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},   {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},    {"torch.BoolStorage", torch::kBool},
  };
  return dtypes;
}

bool is_allowed_global(const std::string& name) {
  return name == kOrderedDict || name == kRebuildTensor || name == kRebuildParameter ||
         storage_dtypes().count(name) > 0;
}

struct ArchiveDiscarder {
  void operator()(zip_t* archive) const { zip_discard(archive); }  // read-only: nothing to write
};
using Archive = std::unique_ptr<zip_t, ArchiveDiscarder>;

std::string libzip_message(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string message = zip_error_strerror(&error);
  zip_error_fini(&error);
  return message;
}

// Interprets one open archive; `name_` prefixes every error message.
class CheckpointReader {
 public:
  CheckpointReader(zip_t* archive, std::string name) : archive_(archive), name_(std::move(name)) {}

  StateDict read() {
    prefix_ = find_data_pkl_prefix();
    check_byte_order();
    const std::vector<char> pickle_bytes = read_entry(prefix_ + "data.pkl");
    pickle::Document document;
    try {
      document = pickle::parse(std::string_view(pickle_bytes.data(), pickle_bytes.size()), is_allowed_global);
    } catch (const pickle::PickleError& error) {
      fail(prefix_ + "data.pkl: " + error.what());
    }
    return state_dict_from(document.root);
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw CheckpointError("checkpoint " + name_ + ": " + problem);
  }

  // "<top>/" for the single entry named "<top>/data.pkl", or "" for a root data.pkl.
  std::string find_data_pkl_prefix() const {
    const std::string suffix = "data.pkl";
    std::vector<std::string> found;
    const zip_int64_t entries = zip_get_num_entries(archive_, 0);
    for (zip_int64_t i = 0; i < entries; ++i) {
      const char* raw_name = zip_get_name(archive_, static_cast<zip_uint64_t>(i), 0);
      if (raw_name == nullptr) continue;
      const std::string entry = raw_name;
      const bool in_folder = entry.size() > suffix.size() &&
                             entry.compare(entry.size() - suffix.size() - 1, std::string::npos, "/" + suffix) == 0;
      if (entry == suffix || in_folder) found.push_back(entry.substr(0, entry.size() - suffix.size()));
    }
    if (found.empty()) fail("no data.pkl in the archive: not a torch.save checkpoint");
    if (found.size() > 1) fail("several data.pkl in the archive ('" + found[0] + "', '" + found[1] + "')");
    return found.front();
  }

  // Newer torch.save files record the byte order; the storages are copied as they are.
  void check_byte_order() const {
    if (zip_name_locate(archive_, (prefix_ + "byteorder").c_str(), 0) < 0) return;
    const std::vector<char> order = read_entry(prefix_ + "byteorder");
    if (std::string(order.begin(), order.end()) != "little") {
      fail("storages are not little-endian (" + prefix_ + "byteorder)");
    }
  }

  // The whole entry. The buffer grows as data arrives, trusting the size the
  // archive claims only up to a bound, so a forged size cannot make us allocate.
  std::vector<char> read_entry(const std::string& entry) const {
    const zip_int64_t index = zip_name_locate(archive_, entry.c_str(), 0);
    if (index < 0) fail(entry + " is missing from the archive");
    std::vector<char> bytes;
    zip_stat_t stat;
    if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &stat) == 0 && (stat.valid & ZIP_STAT_SIZE)) {
      bytes.reserve(std::min<zip_uint64_t>(stat.size, zip_uint64_t{64} << 20));
    }
    zip_file_t* file = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
    if (file == nullptr) fail("cannot read " + entry + ": " + zip_strerror(archive_));
    std::vector<char> chunk(size_t{1} << 16);
    while (true) {
      const zip_int64_t got = zip_fread(file, chunk.data(), chunk.size());
      if (got < 0) {
        const std::string why = zip_file_strerror(file);
        zip_fclose(file);
        fail("cannot read " + entry + ": " + why);
      }
      if (got == 0) break;
      bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + got);
    }
    zip_fclose(file);
    return bytes;
  }

  // Storages shared by several tensors are read once.
  const std::shared_ptr<std::vector<char>>& storage_bytes(const std::string& key) {
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      it = storages_
               .emplace(key, std::make_shared<std::vector<char>>(read_entry(prefix_ + "data/" + key)))
               .first;
    }
    return it->second;
  }

  StateDict state_dict_from(const Value* root) {
    const bool is_ordered_dict = root->is(Kind::kCall) && root->items[0]->is_global(kOrderedDict) &&
                                 root->items[1]->items.empty();
    if (!root->is(Kind::kDict) && !is_ordered_dict) fail("the pickled object is not a dict of tensors");
    StateDict state;
    for (const auto& [key, value] : root->entries) {
      if (!key->is(Kind::kString)) fail("the state_dict has a key that is not a string");
      state[key->text] = tensor_from(value, key->text);
    }
    return state;
  }

  // A tensor, or a Parameter wrapping one (never nested deeper: that bounds recursion).
  torch::Tensor tensor_from(const Value* value, const std::string& name) {
    if (is_call_of(value, kRebuildParameter)) {
      const Value* args = value->items[1];
      if (args->items.size() != 3 || !is_call_of(args->items[0], kRebuildTensor)) {
        fail("tensor '" + name + "': unexpected _rebuild_parameter arguments");
      }
      value = args->items[0];
    }
    if (!is_call_of(value, kRebuildTensor)) fail("'" + name + "' is not a tensor");
    return rebuild_tensor(value->items[1]->items, name);
  }

  static bool is_call_of(const Value* value, const char* global) {
    return value->is(Kind::kCall) && value->items[0]->is_global(global);
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  // backward_hooks[, metadata]); storage is the persistent id
  // ('storage', <storage class>, key, location, numel).
  torch::Tensor rebuild_tensor(const std::vector<const Value*>& args, const std::string& name) {
    auto bad = [&](const std::string& what) { fail("tensor '" + name + "': " + what); };
    if (args.size() != 6 && args.size() != 7) bad("_rebuild_tensor_v2 with " + std::to_string(args.size()) + " arguments");
    if (!args[0]->is(Kind::kPersistentId) || !args[0]->items[0]->is(Kind::kTuple)) bad("storage is not a persistent id");
    const std::vector<const Value*>& id = args[0]->items[0]->items;
    if (id.size() != 5 || !id[0]->is(Kind::kString) || id[0]->text != "storage" || !id[1]->is(Kind::kGlobal) ||
        !storage_dtypes().count(id[1]->text) || !id[2]->is(Kind::kString) || !id[4]->is(Kind::kInt)) {
      bad("malformed storage reference");
    }
    const torch::ScalarType dtype = storage_dtypes().at(id[1]->text);
    const std::string& key = id[2]->text;
    const int64_t storage_numel = id[4]->integer;

    const int64_t offset = as_index(args[1], bad);
    const std::vector<int64_t> size = as_index_tuple(args[2], bad);
    const std::vector<int64_t> stride = as_index_tuple(args[3], bad);
    if (size.size() != stride.size()) bad("size and stride differ in length");

    // Check that the view lies inside the storage, with overflow-safe arithmetic.
    const int64_t element_size = static_cast<int64_t>(c10::elementSize(dtype));
    int64_t storage_bytes_needed = 0, numel = 1, last = offset;
    bool overflow = __builtin_mul_overflow(storage_numel, element_size, &storage_bytes_needed) || storage_numel < 0;
    for (size_t d = 0; d < size.size() && !overflow; ++d) {
      int64_t reach = 0;
      overflow = __builtin_mul_overflow(size[d], numel, &numel) ||
                 (size[d] > 0 && (__builtin_mul_overflow(size[d] - 1, stride[d], &reach) ||
                                  __builtin_add_overflow(last, reach, &last)));
    }
    if (overflow) bad("size, stride or storage length out of range");
    if (offset > storage_numel || (numel > 0 && last >= storage_numel)) {
      bad("size and stride reach element " + std::to_string(last) + " of a storage of " +
          std::to_string(storage_numel));
    }
    // Memory bound: a state_dict tensor never has more elements than its storage
    // (that would take overlapping strides, as from expand()).
    if (numel > storage_numel) bad("more elements than its storage (overlapping views are not supported)");

    const std::shared_ptr<std::vector<char>>& bytes = storage_bytes(key);
    if (static_cast<uint64_t>(storage_bytes_needed) > bytes->size()) {
      bad("storage data/" + key + " holds " + std::to_string(bytes->size()) + " bytes, " +
          std::to_string(storage_bytes_needed) + " expected");
    }
    // Bools are read as bytes and normalized, since a byte other than 0/1 is not a valid bool.
    const torch::ScalarType read_type = dtype == torch::kBool ? torch::kUInt8 : dtype;
    // A tensor that is its whole storage (as state_dict tensors are) keeps the
    // bytes read, with no copy, so loading holds the weights once; views of a
    // part of a storage are copied, so that no two tensors alias.
    torch::Tensor storage = torch::from_blob(
        bytes->data(), {storage_numel}, [owner = bytes](void*) {}, torch::TensorOptions().dtype(read_type));
    torch::Tensor tensor = storage.as_strided(size, stride, offset);
    if (dtype == torch::kBool) return tensor.ne(0);
    const bool whole_storage = offset == 0 && numel == storage_numel && tensor.is_contiguous();
    return whole_storage ? tensor : tensor.clone(at::MemoryFormat::Contiguous);
  }

  template <typename Fail>
  static int64_t as_index(const Value* value, const Fail& bad) {
    if (!value->is(Kind::kInt) || value->integer < 0) bad("offset, size or stride is not a non-negative integer");
    return value->integer;
  }
  template <typename Fail>
  static std::vector<int64_t> as_index_tuple(const Value* value, const Fail& bad) {
    if (!value->is(Kind::kTuple)) bad("size or stride is not a tuple");
    std::vector<int64_t> out;
    for (const Value* item : value->items) out.push_back(as_index(item, bad));
    return out;
  }

  zip_t* archive_;
  std::string name_;
  std::string prefix_;
  std::map<std::string, std::shared_ptr<std::vector<char>>> storages_;
};

}  // namespace

StateDict load_checkpoint(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_regular_file(path, error) && std::filesystem::file_size(path, error) == 0) {
    throw CheckpointError("checkpoint " + path + ": the file is empty");
  }
  int code = 0;
  Archive archive(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (!archive) {
    throw CheckpointError("checkpoint " + path + ": cannot open as a torch.save zip archive (" +
                          libzip_message(code) + ")");
  }
  return CheckpointReader(archive.get(), path).read();
}

StateDict load_checkpoint_from_memory(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) throw CheckpointError("checkpoint " + name + ": the file is empty");
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  zip_t* opened = source ? zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error) : nullptr;
  if (opened == nullptr) {
    const std::string why = zip_error_strerror(&error);
    if (source) zip_source_free(source);  // the archive did not take it over
    zip_error_fini(&error);
    throw CheckpointError("checkpoint " + name + ": cannot open as a torch.save zip archive (" + why + ")");
  }
  zip_error_fini(&error);
  Archive archive(opened);
  return CheckpointReader(archive.get(), name).read();
}

}  // namespace encodec
