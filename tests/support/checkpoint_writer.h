// Builds torch.save checkpoints by hand: a zip archive of stored entries and a
// protocol-2 pickle of an OrderedDict of tensors, as torch.save writes a
// module's state_dict. For the checkpoint reader's tests and for benchmarks
// that need files of the official size.
#pragma once

#include <zip.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace encodec::testing {

using ZipEntries = std::vector<std::pair<std::string, std::string>>;

// Writes a zip archive with stored (uncompressed) entries, as torch.save does.
inline void write_zip(const std::string& path, const ZipEntries& entries) {
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  if (archive == nullptr) throw std::runtime_error("cannot create " + path + ": libzip error " + std::to_string(code));
  for (const auto& [name, data] : entries) {
    zip_source_t* source = zip_source_buffer(archive, data.data(), data.size(), 0);
    const zip_int64_t index = zip_file_add(archive, name.c_str(), source, ZIP_FL_OVERWRITE);
    if (index < 0) throw std::runtime_error("cannot add " + name + " to " + path + ": " + zip_strerror(archive));
    zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  }
  if (zip_close(archive) != 0) throw std::runtime_error("cannot write " + path + ": " + zip_strerror(archive));
}


// Emits pickle opcodes (protocol 2, as torch.save); see CPython's pickletools.
class PickleWriter {
 public:
  PickleWriter& op(char opcode) { bytes_ += opcode; return *this; }
  PickleWriter& proto() { bytes_ += "\x80\x02"; return *this; }
  PickleWriter& global(const std::string& module, const std::string& name) {
    bytes_ += 'c' + module + '\n' + name + '\n';
    return *this;
  }
  PickleWriter& text(const std::string& s) {  // BINUNICODE
    op('X');
    append_le(s.size(), 4);
    bytes_ += s;
    return *this;
  }
  PickleWriter& integer(int64_t v) {  // BININT1, BININT or LONG1
    if (v >= 0 && v < 256) { op('K'); append_le(v, 1); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { op('J'); append_le(static_cast<uint32_t>(v), 4); }
    else { op('\x8a'); append_le(8, 1); append_le(static_cast<uint64_t>(v), 8); }
    return *this;
  }
  PickleWriter& put(int memo) { op('q'); append_le(memo, 1); return *this; }
  PickleWriter& get(int memo) { op('h'); append_le(memo, 1); return *this; }
  PickleWriter& int_tuple(const std::vector<int64_t>& values) {
    op('(');
    for (int64_t v : values) integer(v);
    return op('t');
  }
  // An empty OrderedDict; needs memo 0 = collections.OrderedDict.
  PickleWriter& empty_ordered_dict() { return get(0).op(')').op('R'); }

  // What torch.save writes for one tensor; `wrap_in_parameter` as for nn.Parameter.
  PickleWriter& tensor(const std::string& storage_class, const std::string& key, int64_t storage_numel,
                       int64_t offset, const std::vector<int64_t>& size,
                       const std::vector<int64_t>& stride, bool wrap_in_parameter = false) {
    if (wrap_in_parameter) global("torch._utils", "_rebuild_parameter").op('(');
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').text("storage").global("torch", storage_class).text(key).text("cpu").integer(storage_numel).op('t');
    op('Q').integer(offset).int_tuple(size).int_tuple(stride).op('\x89').empty_ordered_dict();
    op('t').op('R');
    if (wrap_in_parameter) op('\x89').empty_ordered_dict().op('t').op('R');
    return *this;
  }

  // A whole state_dict, as torch.save of `module.state_dict()`: an OrderedDict
  // with the `_metadata` attribute. `add_items` writes name/tensor pairs.
  template <typename AddItems>
  static std::string state_dict(const AddItems& add_items) {
    PickleWriter w;
    w.proto().global("collections", "OrderedDict").put(0).op(')').op('R').op('(');
    add_items(w);
    w.op('u');
    w.op('}').text("_metadata").empty_ordered_dict();
    w.op('(').text("").op('}').text("version").integer(1).op('s').op('u');
    w.op('s').op('b').op('.');
    return w.bytes_;
  }

  std::string bytes_;

 private:
  void append_le(uint64_t value, int width) {
    for (int i = 0; i < width; ++i) bytes_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }
};

// `tensors` (float32) as torch.save(state_dict) writes them: one storage each,
// contiguous, in the archive folder "archive".
inline void write_state_dict(const std::string& path,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  ZipEntries entries;
  const std::string pickle = PickleWriter::state_dict([&](PickleWriter& w) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const torch::Tensor value = tensors[i].second.to(torch::kFloat32).contiguous();
      const std::vector<int64_t> size(value.sizes().begin(), value.sizes().end());
      const std::vector<int64_t> stride(value.strides().begin(), value.strides().end());
      w.text(tensors[i].first).tensor("FloatStorage", std::to_string(i), value.numel(), 0, size, stride);
      entries.emplace_back("archive/data/" + std::to_string(i),
                           std::string(static_cast<const char*>(value.data_ptr()), value.numel() * sizeof(float)));
    }
  });
  entries.emplace_back("archive/data.pkl", pickle);
  entries.emplace_back("archive/version", "3\n");
  write_zip(path, entries);
}

}  // namespace encodec::testing
