// Tests of the torch.save checkpoint reader: the golden checkpoints against
// facts known independently (the official tensor names, the architectures in
// manifest.json, the raw storages in the archive), hand-assembled checkpoints
// for strided and shared storages, and damaged or hostile files, which must
// give a CheckpointError naming the file and never crash.
#include "encodec/checkpoint.h"

#include <zip.h>

#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint_writer.h"
#include "golden.h"

namespace encodec {
namespace {

using ::encodec::testing::golden_manifest;
using ::encodec::testing::golden_path;
using ::encodec::testing::make_temp_dir;
using ::encodec::testing::read_file_bytes;
using Entries = ::encodec::testing::ZipEntries;
using ::encodec::testing::PickleWriter;
using ::encodec::testing::write_zip;
using namespace std::string_literals;  // pickles hold NUL bytes

// --- Building checkpoints by hand. ----------------------------------------------

// Every entry of a zip archive, by name.
std::map<std::string, std::string> read_zip(const std::string& path) {
  std::map<std::string, std::string> entries;
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &code);
  if (archive == nullptr) return entries;
  for (zip_int64_t i = 0; i < zip_get_num_entries(archive, 0); ++i) {
    zip_stat_t stat;
    zip_stat_index(archive, i, 0, &stat);
    std::string data(stat.size, '\0');
    zip_file_t* file = zip_fopen_index(archive, i, 0);
    zip_fread(file, data.data(), data.size());
    zip_fclose(file);
    entries[stat.name] = data;
  }
  zip_discard(archive);
  return entries;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// 12 floats 0, 1.5, 3, ... : easy to check by index.
std::vector<float> ramp(int n) {
  std::vector<float> values(n);
  for (int i = 0; i < n; ++i) values[i] = 1.5f * i;
  return values;
}

// A small valid checkpoint: "a" and "b" share storage 0 (b at an offset, with
// transposed strides), "c" is a Parameter of int64, "d" bools, "e" float64,
// "f" a 0-dim int64 (as BatchNorm's num_batches_tracked), "g" an empty tensor.
Entries handmade_checkpoint(const std::string& top = "archive") {
  const std::string pickle = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("a").tensor("FloatStorage", "0", 12, 0, {3, 4}, {4, 1});
    w.text("b").tensor("FloatStorage", "0", 12, 1, {2, 3}, {1, 4});
    w.text("c").tensor("LongStorage", "1", 3, 0, {3}, {1}, /*wrap_in_parameter=*/true);
    w.text("d").tensor("BoolStorage", "2", 3, 0, {3}, {1});
    w.text("e").tensor("DoubleStorage", "3", 2, 1, {1}, {1});
    w.text("f").tensor("LongStorage", "4", 1, 0, {}, {});
    w.text("g").tensor("FloatStorage", "5", 0, 0, {0, 3}, {3, 1});
  });
  return {{top + "/data.pkl", pickle},
          {top + "/data/0", raw_bytes(ramp(12))},
          {top + "/data/1", raw_bytes(std::vector<int64_t>{-5, 0, int64_t{1} << 40})},
          {top + "/data/2", std::string("\x00\x01\x02", 3)},
          {top + "/data/3", raw_bytes(std::vector<double>{0.25, -2.5})},
          {top + "/data/4", raw_bytes(std::vector<int64_t>{7})},
          {top + "/data/5", ""},
          {top + "/version", "3\n"}};
}

// --- Checking errors. --------------------------------------------------------------

// The message of the CheckpointError loading `path` throws; a test failure if
// it throws anything else, or nothing.
std::string load_error(const std::string& path) {
  try {
    load_checkpoint(path);
  } catch (const CheckpointError& error) {
    return error.what();
  } catch (const std::exception& error) {
    ADD_FAILURE() << path << ": not a CheckpointError: " << error.what();
    return "";
  }
  ADD_FAILURE() << path << ": loaded without an error";
  return "";
}

void expect_error(const std::string& path, const std::string& problem) {
  const std::string message = load_error(path);
  EXPECT_NE(message.find(path), std::string::npos) << "message does not name the file: " << message;
  EXPECT_NE(message.find(problem), std::string::npos) << "expected '" << problem << "' in: " << message;
}

// Writes a checkpoint whose pickle is `pickle` with the handmade storages.
std::string write_with_pickle(const std::string& dir, const std::string& file, const std::string& pickle) {
  Entries entries = handmade_checkpoint();
  entries[0].second = pickle;
  const std::string path = dir + "/" + file;
  write_zip(path, entries);
  return path;
}

// --- Golden checkpoints. ---------------------------------------------------------

struct GoldenFile {
  std::string checkpoint;     // file name in the golden directory
  std::string official_name;  // its key in official_shapes.json
  nlohmann::json config;      // manifest.json architecture
  bool is_lm;
};

std::vector<GoldenFile> golden_files() {
  std::vector<GoldenFile> files;
  const nlohmann::json& manifest = golden_manifest();
  for (const auto& [name, config] : manifest["models"].items()) {
    files.push_back({config["checkpoint"].get<std::string>(), name, config, false});
  }
  for (const auto& [name, config] : manifest["lm_models"].items()) {  // "encodec_24khz" -> "encodec_lm_24khz"
    files.push_back({config["checkpoint"].get<std::string>(), "encodec_lm_" + name.substr(std::string("encodec_").size()), config, true});
  }
  return files;
}

std::vector<int64_t> shape(const torch::Tensor& t) { return t.sizes().vec(); }

TEST(CheckpointGolden, NamesAreTheOfficialOnesWithTheSameRanks) {
  ENCODEC_REQUIRE_GOLDEN();
  const nlohmann::json official = nlohmann::json::parse(read_file_bytes(golden_path("official_shapes.json")));
  const std::vector<GoldenFile> files = golden_files();
  ASSERT_EQ(files.size(), 4u);
  for (const GoldenFile& file : files) {
    SCOPED_TRACE(file.checkpoint);
    const StateDict state = load_checkpoint(golden_path(file.checkpoint));
    const nlohmann::json& expected = official.at(file.official_name);
    EXPECT_EQ(state.size(), expected.size());
    for (const auto& [name, official_shape] : expected.items()) {
      ASSERT_TRUE(state.count(name)) << name;
      EXPECT_EQ(state.at(name).dim(), static_cast<int64_t>(official_shape.size())) << name;
    }
  }
}

TEST(CheckpointGolden, TensorsAreOwnedContiguousFiniteFloats) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const GoldenFile& file : golden_files()) {
    SCOPED_TRACE(file.checkpoint);
    for (const auto& [name, tensor] : load_checkpoint(golden_path(file.checkpoint))) {
      EXPECT_EQ(tensor.scalar_type(), torch::kFloat32) << name;
      EXPECT_TRUE(tensor.device().is_cpu()) << name;
      EXPECT_TRUE(tensor.is_contiguous()) << name;
      EXPECT_EQ(tensor.storage().nbytes(), tensor.numel() * sizeof(float)) << name << " is a view";
      EXPECT_TRUE(torch::isfinite(tensor).all().item<bool>()) << name;
    }
  }
}

// The values, independently of the pickle: these files hold one whole storage
// per tensor, so the tensors' bytes are exactly the archive's data/* entries.
TEST(CheckpointGolden, TensorBytesAreTheArchiveStorages) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const GoldenFile& file : golden_files()) {
    SCOPED_TRACE(file.checkpoint);
    const std::string path = golden_path(file.checkpoint);
    std::multiset<std::string> storages, tensors;
    for (const auto& [name, data] : read_zip(path)) {
      if (name.find("/data/") != std::string::npos) storages.insert(data);
    }
    for (const auto& [name, tensor] : load_checkpoint(path)) {
      tensors.insert(std::string(static_cast<const char*>(tensor.data_ptr()), tensor.nbytes()));
    }
    EXPECT_FALSE(storages.empty());
    EXPECT_TRUE(storages == tensors);
  }
}

TEST(CheckpointGolden, CompressionModelShapesFollowTheManifest) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const GoldenFile& file : golden_files()) {
    if (file.is_lm) continue;
    SCOPED_TRACE(file.checkpoint);
    const StateDict state = load_checkpoint(golden_path(file.checkpoint));
    const int64_t n_filters = file.config["n_filters"], channels = file.config["channels"];
    const int64_t dimension = file.config["dimension"], bins = file.config["bins"], n_q = file.config["n_q"];
    const int64_t kernel = file.config["kernel_size"];
    // Weight norm stores the first conv's direction as weight_v; time-group-norm models a plain weight.
    const std::string first_conv = file.config["norm"] == "weight_norm" ? "encoder.model.0.conv.conv.weight_v"
                                                                        : "encoder.model.0.conv.conv.weight";
    EXPECT_EQ(shape(state.at(first_conv)), (std::vector<int64_t>{n_filters, channels, kernel}));
    int64_t layers = 0;
    while (state.count("quantizer.vq.layers." + std::to_string(layers) + "._codebook.embed")) ++layers;
    EXPECT_EQ(layers, n_q);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string codebook = "quantizer.vq.layers." + std::to_string(i) + "._codebook.";
      EXPECT_EQ(shape(state.at(codebook + "embed")), (std::vector<int64_t>{bins, dimension}));
      EXPECT_EQ(shape(state.at(codebook + "embed_avg")), (std::vector<int64_t>{bins, dimension}));
      EXPECT_EQ(shape(state.at(codebook + "cluster_size")), (std::vector<int64_t>{bins}));
      // A trained codebook is initialized, and its cluster sizes are counts.
      EXPECT_TRUE(torch::equal(state.at(codebook + "inited"), torch::ones({1})));
      EXPECT_GE(state.at(codebook + "cluster_size").min().item<float>(), 0.0f);
    }
  }
}

TEST(CheckpointGolden, LanguageModelShapesFollowTheManifest) {
  ENCODEC_REQUIRE_GOLDEN();
  for (const GoldenFile& file : golden_files()) {
    if (!file.is_lm) continue;
    SCOPED_TRACE(file.checkpoint);
    const StateDict state = load_checkpoint(golden_path(file.checkpoint));
    const int64_t dim = file.config["dim"], n_q = file.config["n_q"], card = file.config["card"];
    const int64_t num_layers = file.config["num_layers"];
    EXPECT_EQ(shape(state.at("transformer.norm_in.weight")), (std::vector<int64_t>{dim}));
    for (int64_t i = 0; i < n_q; ++i) {
      EXPECT_EQ(shape(state.at("emb." + std::to_string(i) + ".weight")), (std::vector<int64_t>{card + 1, dim}));
      EXPECT_EQ(shape(state.at("linears." + std::to_string(i) + ".weight")), (std::vector<int64_t>{card, dim}));
    }
    EXPECT_FALSE(state.count("emb." + std::to_string(n_q) + ".weight"));
    for (int64_t i = 0; i < num_layers; ++i) {
      EXPECT_EQ(shape(state.at("transformer.layers." + std::to_string(i) + ".self_attn.in_proj_weight")),
                (std::vector<int64_t>{3 * dim, dim}));
    }
    EXPECT_FALSE(state.count("transformer.layers." + std::to_string(num_layers) + ".norm1.weight"));
  }
}

TEST(CheckpointGolden, FromMemoryEqualsFromFile) {
  ENCODEC_REQUIRE_GOLDEN();
  const std::string path = golden_path("encodec_48khz-random.th");
  const StateDict from_file = load_checkpoint(path);
  StateDict from_memory = load_checkpoint_from_memory(read_file_bytes(path), "in-memory copy");
  ASSERT_EQ(from_memory.size(), from_file.size());
  for (const auto& [name, tensor] : from_file) EXPECT_TRUE(torch::equal(tensor, from_memory.at(name))) << name;
}

// --- Hand-assembled checkpoints. ----------------------------------------------------

TEST(CheckpointHandmade, SharedStorageOffsetsStridesAndDtypes) {
  const std::string path = make_temp_dir("checkpoint_handmade") + "/model.th";
  write_zip(path, handmade_checkpoint());
  StateDict state = load_checkpoint(path);
  ASSERT_EQ(state.size(), 7u);

  const torch::Tensor storage = torch::tensor(ramp(12));
  EXPECT_TRUE(torch::equal(state.at("a"), storage.view({3, 4})));
  // b[i][j] = storage[1 + i + 4 j]: offset 1, strides (1, 4).
  const torch::Tensor& b = state.at("b");
  ASSERT_EQ(shape(b), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(b.is_contiguous());
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(b[i][j].item<float>(), 1.5f * (1 + i + 4 * j)) << i << "," << j;
  }
  // Each tensor owns its memory: writing one leaves the other as it was.
  state.at("a").fill_(-1.0f);
  EXPECT_EQ(b[1][2].item<float>(), 1.5f * 10);

  EXPECT_TRUE(torch::equal(state.at("c"), torch::tensor({int64_t{-5}, int64_t{0}, int64_t{1} << 40})));
  EXPECT_EQ(state.at("d").scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(state.at("d"), torch::tensor({false, true, true})));
  EXPECT_TRUE(torch::equal(state.at("e"), torch::tensor({-2.5}, torch::kFloat64)));
  EXPECT_EQ(state.at("f").dim(), 0);
  EXPECT_EQ(state.at("f").item<int64_t>(), 7);
  EXPECT_EQ(shape(state.at("g")), (std::vector<int64_t>{0, 3}));
}

TEST(CheckpointHandmade, TopFolderNameDoesNotMatter) {
  const std::string dir = make_temp_dir("checkpoint_top_folder");
  for (const std::string top : {"archive", "my_model-1234", ""}) {
    Entries entries = handmade_checkpoint(top);
    if (top.empty()) {  // entries at the root: "data.pkl", "data/0", ...
      for (auto& entry : entries) entry.first.erase(0, 1);
    }
    write_zip(dir + "/m.th", entries);
    EXPECT_EQ(load_checkpoint(dir + "/m.th").size(), 7u) << "top folder '" << top << "'";
  }
}

TEST(CheckpointHandmade, ProtocolFourOpcodes) {
  // SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, FRAME and BINFLOAT, as a newer pickler writes.
  auto short_text = [](const std::string& s) { return std::string("\x8c") + static_cast<char>(s.size()) + s; };
  std::string p = "\x80\x04\x95"s + std::string(8, '\0');
  p += short_text("collections") + short_text("OrderedDict") + "\x93\x94)R\x94("s;
  p += short_text("x") + short_text("torch._utils") + short_text("_rebuild_tensor_v2") + "\x93("s;
  p += "("s + short_text("storage") + short_text("torch") + short_text("FloatStorage") + "\x93"s;
  p += short_text("0") + short_text("cpu") + "K\x0ct\x94Q"s;
  p += "K\x02K\x02\x85K\x03\x85\x89h\x00)R"s;
  p += "G\x3f\xf8\x00\x00\x00\x00\x00\x00"s;  // an extra metadata argument: 1.5
  p += "tRu.";
  const std::string path = write_with_pickle(make_temp_dir("checkpoint_protocol4"), "p4.th", p);
  const StateDict state = load_checkpoint(path);
  // x = storage[2::3][:2] = {3, 7.5}
  EXPECT_TRUE(torch::equal(state.at("x"), torch::tensor({3.0f, 7.5f})));
}

// --- Damaged and hostile files. -------------------------------------------------------

class CheckpointBadInput : public ::testing::Test {
 protected:
  std::string dir_ = make_temp_dir("checkpoint_bad_input");
  std::string write(const std::string& file, const std::string& bytes) {
    const std::string path = dir_ + "/" + file;
    std::FILE* out = std::fopen(path.c_str(), "wb");
    if (out == nullptr) throw std::runtime_error("cannot create " + path);
    std::fwrite(bytes.data(), 1, bytes.size(), out);
    std::fclose(out);
    return path;
  }
};

TEST_F(CheckpointBadInput, MissingFile) { expect_error(dir_ + "/no_such_file.th", "cannot open"); }
TEST_F(CheckpointBadInput, EmptyFile) { expect_error(write("empty.th", ""), "empty"); }
TEST_F(CheckpointBadInput, NotAZip) { expect_error(write("text.th", "just some text\n"), "zip"); }

TEST_F(CheckpointBadInput, TruncatedGoldenCheckpoint) {
  ENCODEC_REQUIRE_GOLDEN();
  const std::string bytes = read_file_bytes(golden_path("encodec_24khz-random.th"));
  expect_error(write("truncated.th", bytes.substr(0, bytes.size() / 2)), "zip");
}

TEST_F(CheckpointBadInput, ZipWithoutDataPkl) {
  write_zip(dir_ + "/no_pkl.th", {{"archive/version", "3\n"}, {"archive/data/0", "abcd"}});
  expect_error(dir_ + "/no_pkl.th", "no data.pkl");
}

TEST_F(CheckpointBadInput, MissingStorage) {
  const std::string pickle = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "7", 4, 0, {4}, {1});
  });
  expect_error(write_with_pickle(dir_, "missing_storage.th", pickle), "archive/data/7 is missing");
}

TEST_F(CheckpointBadInput, UnknownGlobal) {
  const std::string pickle = PickleWriter().proto().global("os", "system").op('.').bytes_;
  expect_error(write_with_pickle(dir_, "global.th", pickle), "unsupported global 'os.system'");
}

TEST_F(CheckpointBadInput, UnknownOpcode) {
  expect_error(write_with_pickle(dir_, "opcode.th", "\x80\x02(lp0\n."), "unsupported pickle opcode 0x6c ('l')");
}

TEST_F(CheckpointBadInput, StackUnderflow) {
  expect_error(write_with_pickle(dir_, "underflow.th", "\x80\x02."), "stack underflow");
  // Items below a MARK are out of reach until it is popped.
  expect_error(write_with_pickle(dir_, "underflow_mark.th", "\x80\x02K\x01(\x85."), "stack underflow");
}

TEST_F(CheckpointBadInput, PickleWithoutStop) {
  expect_error(write_with_pickle(dir_, "no_stop.th", "\x80\x02}"), "without a STOP");
  expect_error(write_with_pickle(dir_, "cut_string.th", "\x80\x02X\xff\x00\x00\x00ab"s), "ends in the middle");
}

TEST_F(CheckpointBadInput, StorageShorterThanDeclared) {
  const std::string pickle = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "0", 13, 0, {13}, {1});  // data/0 holds 12 floats
  });
  expect_error(write_with_pickle(dir_, "short_storage.th", pickle), "holds 48 bytes, 52 expected");
}

TEST_F(CheckpointBadInput, ViewOutsideStorage) {
  const std::string pickle = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "0", 12, 2, {3, 4}, {4, 1});
  });
  expect_error(write_with_pickle(dir_, "outside.th", pickle), "tensor 'w': size and stride reach element 13");
}

TEST_F(CheckpointBadInput, HugeSizesAreRejectedBeforeAllocating) {
  const std::string overflow = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "0", 12, 0, {int64_t{1} << 40, int64_t{1} << 40}, {1, 1});
  });
  expect_error(write_with_pickle(dir_, "overflow.th", overflow), "out of range");
  const std::string expanded = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "0", 12, 0, {int64_t{1} << 30}, {0});
  });
  expect_error(write_with_pickle(dir_, "expanded.th", expanded), "more elements than its storage");
  const std::string huge_numel = PickleWriter::state_dict([](PickleWriter& w) {
    w.text("w").tensor("FloatStorage", "0", int64_t{1} << 50, 0, {4}, {1});
  });
  expect_error(write_with_pickle(dir_, "huge_numel.th", huge_numel), "bytes");
}

TEST_F(CheckpointBadInput, BigEndianStorages) {
  Entries entries = handmade_checkpoint();
  entries.push_back({"archive/byteorder", "little"});
  write_zip(dir_ + "/little.th", entries);
  EXPECT_EQ(load_checkpoint(dir_ + "/little.th").size(), 7u);
  entries.back().second = "big";
  write_zip(dir_ + "/big.th", entries);
  expect_error(dir_ + "/big.th", "not little-endian");
}

TEST_F(CheckpointBadInput, RootIsNotADictOfTensors) {
  expect_error(write_with_pickle(dir_, "list.th", "\x80\x02]."), "not a dict of tensors");
  const std::string not_tensor = PickleWriter::state_dict([](PickleWriter& w) { w.text("n").integer(3); });
  expect_error(write_with_pickle(dir_, "int.th", not_tensor), "'n' is not a tensor");
}

TEST_F(CheckpointBadInput, FromMemoryNamesTheGivenName) {
  try {
    load_checkpoint_from_memory("PK\x03\x04 not really", "bytes from the network");
    ADD_FAILURE() << "no error";
  } catch (const CheckpointError& error) {
    EXPECT_NE(std::string(error.what()).find("bytes from the network"), std::string::npos) << error.what();
  }
}

// Every truncation and many random corruptions of a valid checkpoint load or
// give a CheckpointError: never a crash, a hang or another exception.
TEST_F(CheckpointBadInput, CorruptedPicklesAndArchivesNeverCrash) {
  const Entries valid = handmade_checkpoint();
  const std::string pickle = valid[0].second;
  std::mt19937 random(1234);
  auto survives = [](const std::string& bytes) {
    try {
      load_checkpoint_from_memory(bytes, "corrupted");
    } catch (const CheckpointError&) {
    } catch (const std::exception& error) {
      ADD_FAILURE() << "not a CheckpointError: " << error.what();
    }
  };
  const std::string path = dir_ + "/corrupted.th";
  for (size_t trial = 0; trial < pickle.size() + 600; ++trial) {
    std::string damaged = pickle;
    if (trial < pickle.size()) {
      damaged.resize(trial);
    } else {
      for (int flips = 1 + random() % 4; flips > 0; --flips) damaged[random() % damaged.size()] = static_cast<char>(random());
    }
    Entries entries = valid;
    entries[0].second = damaged;
    write_zip(path, entries);
    survives(read_file_bytes(path));
  }
  write_zip(path, valid);
  const std::string archive = read_file_bytes(path);
  for (size_t cut = 0; cut < archive.size(); cut += 7) survives(archive.substr(0, cut));
  for (int trial = 0; trial < 300; ++trial) {
    std::string damaged = archive;
    damaged[random() % damaged.size()] = static_cast<char>(random());
    survives(damaged);
  }
}

}  // namespace
}  // namespace encodec
