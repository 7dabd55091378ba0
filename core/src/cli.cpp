#include "encodec/cli.h"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "audio_internal.h"
#include "encodec/audio_io.h"
#include "encodec/audio_stream.h"
#include "encodec/compress.h"
#include "encodec/demo_model.h"
#include "encodec/encodec.h"
#include "encodec/file_coding.h"
#include "encodec/lm.h"
#include "progress_line.h"
#include "signal_cleanup.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;

constexpr const char* kEcdcExtension = ".ecdc";
constexpr const char* kWavExtension = ".wav";
// Exit codes: argparse's conventions, which the reference CLI has.
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct CliOptions {
  std::string input;
  std::string output;
  double bandwidth_kbps = 6.0;
  bool force = false;
  bool hq = false;
  bool lm = false;
  // --portable-lm: LM coding with the deterministic coder ("lmk": "det1").
  bool portable_lm = false;
  bool rescale = false;
  bool quiet = false;
  std::string decompress_suffix;
  std::string checkpoint;
  std::string lm_checkpoint;
  std::string model_dir;
  // Fetch the official 24 kHz checkpoint when it is not cached instead of using the demo model.
  bool download = false;
  int threads = 0;
  // The fast kernels (the default); --reference clears it for the Python
  // package's own operations. --fast is accepted and changes nothing.
  bool fast = true;
  bool reference = false;
  // Reference path on the whole input whatever its length (no automatic streaming).
  bool whole_file = false;
  std::string precision = "fp32";  // or "bf16" (implies fast)
  // Samples per block pushed to the streaming engine; 0: not given.
  int64_t stream_block = 0;
  // Hidden (benchmarks): official-size models with random weights instead of
  // checkpoints; speed and memory do not depend on the values.
  bool random_weights = false;
};

// A user-facing failure: printed as "encodec: error: <message>", exit code 1.
class CliError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string lowercase_extension(const fs::path& path) {
  std::string extension = path.extension().string();
  for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return extension;
}

std::string format_bandwidths(const std::vector<double>& bandwidths) {
  std::ostringstream out;
  for (size_t i = 0; i < bandwidths.size(); ++i) out << (i ? ", " : "") << bandwidths[i];
  return out.str();
}

std::string system_error_text() { return std::strerror(errno); }

void check_input(const CliOptions& options) {
  std::error_code ec;
  const fs::file_status status = fs::status(options.input, ec);
  if (!fs::exists(status)) throw CliError("input file " + options.input + " does not exist");
  if (fs::is_directory(status)) throw CliError("input " + options.input + " is a directory");
}

// The early check, before any work: the output's folder must exist and an
// existing output is refused without --force. (commit_output re-checks
// atomically at the end.)
void check_output_path(const CliOptions& options) {
  const fs::path output(options.output);
  const fs::path folder = output.has_parent_path() ? output.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw CliError("output folder " + folder.string() + " for " + options.output +
                   " does not exist");
  }
  const bool output_exists = fs::exists(fs::symlink_status(output, ec));
  if (output_exists && fs::equivalent(output, fs::path(options.input), ec)) {
    throw CliError("output " + options.output + " is the input file");
  }
  if (output_exists && !options.force) {
    throw CliError("output file " + options.output + " exists; use -f / --force to overwrite it");
  }
}

// A uniquely named placeholder beside the output that the writers replace
// atomically; removed unless it was committed.
class StagingFile {
 public:
  explicit StagingFile(const std::string& output) {
    std::string name_template = output + ".tmp-XXXXXX";
    const int fd = ::mkstemp(name_template.data());
    if (fd < 0) {
      throw CliError("cannot write " + output + ": cannot create a temporary file beside it: " +
                     system_error_text());
    }
    ::close(fd);
    path_ = name_template;
    remove_on_signal_ = RemoveOnSignal(path_);
  }
  StagingFile(const StagingFile&) = delete;
  StagingFile& operator=(const StagingFile&) = delete;
  ~StagingFile() {
    if (!committed_) ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  void mark_committed() {
    committed_ = true;
    remove_on_signal_.release();
  }

 private:
  std::string path_;
  bool committed_ = false;
  RemoveOnSignal remove_on_signal_;
};

[[noreturn]] void throw_output_appeared(const std::string& output) {
  throw CliError("output file " + output +
                 " appeared while encodec was running; use -f / --force to overwrite it");
}

// Writes the output with `write` and moves it into place. `write` must replace
// the file at the path it is given atomically (write_wav_atomic and
// write_file_atomic do), so the output gets their permissions, not the
// placeholder's 0600. A failure leaves nothing behind. Without --force an
// existing file is never replaced, not even one that appeared while we were
// working: the final rename refuses to overwrite.
void commit_output(const CliOptions& options,
                   const std::function<void(const std::string& path)>& write) {
  StagingFile staging(options.output);
  write(staging.path());
  const char* from = staging.path().c_str();
  const char* to = options.output.c_str();
  if (options.force) {
    if (std::rename(from, to) != 0) {
      throw CliError("cannot write " + options.output + ": " + system_error_text());
    }
  } else if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) != 0) {
    const int rename_error = errno;
    if (rename_error == EEXIST) throw_output_appeared(options.output);
    if (rename_error != EINVAL && rename_error != ENOSYS && rename_error != ENOTSUP) {
      throw CliError("cannot write " + options.output + ": " + std::strerror(rename_error));
    }
    // This filesystem cannot rename without replacing: fall back to
    // check-then-rename, as the early check did.
    std::error_code ec;
    if (fs::exists(fs::symlink_status(options.output, ec))) throw_output_appeared(options.output);
    if (std::rename(from, to) != 0) {
      throw CliError("cannot write " + options.output + ": " + system_error_text());
    }
  }
  staging.mark_committed();
}

// An exception's message; LibTorch's without its C++ backtrace.
std::string error_text(const std::exception& error) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&error)) {
    return torch_error->what_without_backtrace();
  }
  return error.what();
}

// What the model is loaded for: compression may fall back to the demo model;
// a file's decompression needs the model named in its header.
enum class ModelUse { kCompress, kDecompress };

// Whether `path` is the demo checkpoint find_demo_checkpoint() finds.
bool is_demo_checkpoint(const std::string& path) {
  try {
    const std::optional<std::string> demo = find_demo_checkpoint();
    std::error_code error;
    return demo && fs::equivalent(path, *demo, error);
  } catch (const DemoModelError&) {
    return false;  // $ENCODEC_DEMO_MODEL is wrong, but --checkpoint does not need it
  }
}

// `instead_of_official`: the official model was wanted but is not at hand
// (then --download is the way to it), rather than named by the file.
EncodecModel load_demo_model(const std::string& path, KernelSet kernel_set, const CliOptions& options,
                             const std::string& why, bool instead_of_official) {
  if (!options.quiet) {
    std::cerr << "encodec: using the demo model " << path << " (" << why
              << "): a small model trained by this project, below the official quality, whose files "
                 "decode only with it"
              << (instead_of_official ? "; --download fetches the official model" : "") << "\n";
  }
  try {
    return EncodecModel::from_checkpoint(path, kModelNameDemo24kHz, kernel_set);
  } catch (const std::exception& error) {
    throw CliError("cannot load the demo model " + path + ": " + error_text(error));
  }
}

// Loads the codec named `model_name`: from --checkpoint when given; the demo
// model for a file naming it, or to compress when the official model is not
// at hand (see below); otherwise the official checkpoint through the model
// store (--model-dir, else $ENCODEC_MODEL_DIR, else the hub cache with download).
EncodecModel load_weights(const CliOptions& options, const std::string& model_name,
                          KernelSet kernel_set, ModelUse use) {
  if (options.random_weights) {
    if (model_name == kModelName24kHz) {
      return EncodecModel::with_random_weights(EncodecConfig::official_24khz(), 0, kernel_set);
    }
    if (model_name == kModelName48kHz) {
      return EncodecModel::with_random_weights(EncodecConfig::official_48khz(), 0, kernel_set);
    }
  }
  if (!options.checkpoint.empty()) {
    // Compressing with the demo file given as --checkpoint: its files carry its name.
    const std::string name =
        use == ModelUse::kCompress && model_name == kModelName24kHz && is_demo_checkpoint(options.checkpoint)
            ? kModelNameDemo24kHz
            : model_name;
    try {
      return EncodecModel::from_checkpoint(options.checkpoint, name, kernel_set);
    } catch (const std::exception& error) {
      // Say which file was meant for which model: a 24 kHz checkpoint given
      // for a 48 kHz file otherwise reads as a mere missing tensor.
      const std::string what = error_text(error);
      throw CliError("cannot load " + model_name + " from --checkpoint " + options.checkpoint +
                     ": " + what);
    }
  }
  if (model_name == kModelNameDemo24kHz) {
    const std::optional<std::string> demo = find_demo_checkpoint();
    if (!demo) {
      throw CliError(options.input + " was compressed with the demo model (" + kModelNameDemo24kHz +
                     "), which this installation does not have: set $ENCODEC_DEMO_MODEL or pass --checkpoint");
    }
    return load_demo_model(*demo, kernel_set, options, "the file names it", /*instead_of_official=*/false);
  }
  ModelStoreOptions store;
  if (!options.model_dir.empty()) store.model_dir = options.model_dir;
  store.show_progress = !options.quiet;
  // No official model at hand and no folder named for it: the demo model
  // rather than a download, so that a fresh machine (perhaps offline) works.
  // A model folder given (--model-dir, $ENCODEC_MODEL_DIR) means the official
  // model is wanted, and its absence stays an error.
  if (model_name == kModelName24kHz && !options.download && !store.model_dir &&
      std::getenv("ENCODEC_MODEL_DIR") == nullptr && !official_checkpoint_in_hub_cache(kCheckpoint24kHz)) {
    if (const std::optional<std::string> demo = find_demo_checkpoint()) {
      const std::string missing = "no official " + std::string(kCheckpoint24kHz) + " in " + default_hub_cache_dir();
      if (use == ModelUse::kCompress) {
        return load_demo_model(*demo, kernel_set, options, missing, /*instead_of_official=*/true);
      }
      // The demo model would decode the official codes to noise.
      throw CliError(options.input + " was compressed with the official " + kModelName24kHz + " model, and there is " +
                     missing + ": --download fetches it (the demo model cannot decode this file)");
    }
  }
  if (model_name == kModelName24kHz) return EncodecModel::encodec_model_24khz(store, kernel_set);
  if (model_name == kModelName48kHz) return EncodecModel::encodec_model_48khz(store, kernel_set);
  throw CliError("the audio was compressed with an unsupported model '" + model_name + "'");
}

// Only the kernels that will run are loaded, so the weights are held once. The
// malloc settings keep it so in the process's RSS: glibc raises its mmap
// threshold whenever a large block is freed, after which freed weights linger
// in the heap (resident) beside the packed copies replacing them. While loading,
// every large block gets its own mapping and goes back to the system when freed;
// afterwards high thresholds keep per-chunk tensors in the heap, reused rather
// than mapped and zeroed again for every chunk.
EncodecModel load_model(const CliOptions& options, const std::string& model_name, ModelUse use) {
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  // bf16 builds its layers from the reference weights (and needs no fp32 fast copies).
  const bool bf16 = options.precision == "bf16";
  EncodecModel model = load_weights(
      options, model_name,
      options.fast && !bf16 ? KernelSet::kFastOnly : KernelSet::kReferenceOnly, use);
  if (bf16) model.set_precision(Precision::kBf16);
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
  return model;
}

bool use_streaming(const EncodecModel& model, const CliOptions& options) {
  return options.fast && !options.whole_file && streams_by_default(model.config());
}

// Switches a long 24 kHz input (or output) to the fast kernels, saying so.
void stream_if_long(CliOptions& options, const std::string& model_name, int64_t audio_length) {
  if (options.fast || options.whole_file || !too_long_for_whole_file(model_name, audio_length)) return;
  const double seconds = static_cast<double>(audio_length) / EncodecConfig::official_24khz().sample_rate_hz;
  options.fast = true;
  if (!options.quiet) {
    std::cerr << "encodec: note: " << options.input << ": " << std::fixed << std::setprecision(1)
              << seconds / 60 << " min of audio; over " << std::defaultfloat
              << kWholeFileLimitSeconds / 60
              << " min the 24 kHz model streams in bounded memory with the fast kernels (codes "
                 "equal to the Python package's up to float rounding; --whole-file keeps the "
                 "reference kernels)\n";
  }
}

FileCoding file_coding(const EncodecModel& model, const CliOptions& options) {
  FileCoding coding;
  coding.streaming = use_streaming(model, options);
  if (options.stream_block > 0) coding.stream_block = options.stream_block;
  return coding;
}

// Loads the LM for `codec`: from --lm-checkpoint when given, otherwise the
// official LM through the model store, as load_weights does for the codec.
LmModel load_lm(const CliOptions& options, const EncodecConfig& codec) {
  if (!options.lm_checkpoint.empty()) {
    try {
      return LmModel::from_checkpoint(options.lm_checkpoint, codec);
    } catch (const std::exception& error) {
      const std::string what = error_text(error);
      throw CliError("cannot load the LM of " + codec.name + " from --lm-checkpoint " +
                     options.lm_checkpoint + ": " + what);
    }
  }
  if (codec.name == kModelNameDemo24kHz) {
    throw CliError("the demo model has no LM: --lm needs the official model (--download fetches it) or "
                   "--lm-checkpoint");
  }
  ModelStoreOptions store;
  if (!options.model_dir.empty()) store.model_dir = options.model_dir;
  store.show_progress = !options.quiet;
  return LmModel::official(codec.name, store);
}

// The reference's check_clipping: without -r, samples beyond 0.99 get clamped.
// (Said once the whole output is written: only then is its peak known.)
void warn_if_clipping(float peak, const CliOptions& options) {
  if (options.rescale) return;
  constexpr float kLimit = detail::kWavLimit;
  if (peak > kLimit) {
    std::cerr << "encodec: warning: clipping: peak " << peak << " exceeds " << kLimit
              << "; use -r / --rescale to rescale the output instead\n";
  }
}

// Decodes the chunks of `in` (its header already read) into a WAV file at
// `path`, chunk by chunk.
void decode_to_wav(std::istream& in, const EcdcHeader& header, const EncodecModel& model,
                   const LmModel* lm, const std::string& path, const CliOptions& options) {
  WavFileOptions wav_options;
  wav_options.rescale = options.rescale;
  WavFileWriter writer(path, model.sample_rate_hz(), model.channels(), wav_options);
  AudioProgress progress("Decompressing",
                         static_cast<double>(header.audio_length) / model.sample_rate_hz(),
                         !options.quiet);
  FileCoding coding = file_coding(model, options);
  coding.progress = [&](double seconds) { progress.update(seconds); };
  decode_ecdc_file(in, header, model, lm, writer, coding);
  progress.finish();
  warn_if_clipping(writer.peak(), options);
  writer.commit();
}

// Encodes everything `reader` yields into the .ecdc stream `out`, chunk by chunk.
void encode_to_ecdc(AudioFileReader& reader, const EncodecModel& model, const EcdcHeader& header,
                    const LmModel* lm, std::ostream& out, const CliOptions& options) {
  AudioProgress progress("Compressing",
                         static_cast<double>(reader.length()) / model.sample_rate_hz(),
                         !options.quiet);
  FileCoding coding = file_coding(model, options);
  coding.progress = [&](double seconds) { progress.update(seconds); };
  encode_audio_file(reader, model, header, lm, out, coding);
  progress.finish();
}

void run_decompress(CliOptions& options) {
  if (options.output.empty()) {
    fs::path output(options.input);
    output.replace_filename(output.stem().string() + options.decompress_suffix + kWavExtension);
    options.output = output.string();
  } else if (lowercase_extension(options.output) != kWavExtension) {
    throw CliError("output " + options.output +
                   ": the output of decompression must be a .wav file");
  }
  check_output_path(options);
  std::ifstream in(options.input, std::ios::binary);
  if (!in) throw CliError("cannot open " + options.input + ": " + system_error_text());
  try {
    const EcdcHeader header = read_ecdc_header(in);
    // Checked before the model is loaded (perhaps downloaded) for nothing.
    if (!is_known_model_name(header.model_name)) {
      throw EcdcFormatError("the audio was compressed with an unsupported model '" +
                            header.model_name + "' (known: " + known_model_names() + ")");
    }
    stream_if_long(options, header.model_name, header.audio_length);
    const EncodecModel model = load_model(options, header.model_name, ModelUse::kDecompress);
    if (options.stream_block > 0 && !use_streaming(model, options)) {
      throw CliError("--stream-block needs the causal 24 kHz model; " + options.input +
                     " was compressed with " + header.model_name);
    }
    std::optional<LmModel> lm;
    if (header.use_lm) lm = load_lm(options, model.config());
    commit_output(options, [&](const std::string& path) {
      decode_to_wav(in, header, model, lm ? &*lm : nullptr, path, options);
    });
  } catch (const EcdcFormatError& error) {
    throw CliError("cannot decompress " + options.input + ": " + error.what());
  }
}

void run_compress(CliOptions& options) {
  if (options.output.empty()) {
    options.output = fs::path(options.input).replace_extension(kEcdcExtension).string();
  }
  const std::string output_extension = lowercase_extension(options.output);
  if (output_extension != kEcdcExtension && output_extension != kWavExtension) {
    throw CliError("output " + options.output + ": the extension must be .ecdc (compress) or " +
                   ".wav (compress, then decompress)");
  }
  check_output_path(options);
  const std::string model_name = options.hq ? kModelName48kHz : kModelName24kHz;
  // Checked against the official list before the model is loaded, so that a
  // typo fails at once rather than after a download.
  const EncodecConfig official =
      options.hq ? EncodecConfig::official_48khz() : EncodecConfig::official_24khz();
  const auto& allowed = official.target_bandwidths;
  if (std::find(allowed.begin(), allowed.end(), options.bandwidth_kbps) == allowed.end()) {
    std::ostringstream message;
    message << "bandwidth " << options.bandwidth_kbps << " kbps is not supported by "
            << model_name << " (choose one of " << format_bandwidths(allowed) << ")";
    throw CliError(message.str());
  }
  // Open the input before loading the model so that a bad input fails fast.
  // Every checkpoint of a model has the official rate and channels.
  std::optional<AudioFileReader> reader;
  try {
    reader.emplace(options.input, official.sample_rate_hz, official.channels);
  } catch (const AudioError& error) {
    const std::string what = error.what();
    if (what.rfind("cannot convert", 0) == 0) {
      throw CliError("cannot convert " + options.input + " for " + model_name + ": " + what);
    }
    throw;
  }
  if (reader->input_frames() == 0) throw CliError("input " + options.input + " has no samples");
  stream_if_long(options, model_name, reader->length());
  std::optional<EncodecModel> loaded;
  try {
    loaded = load_model(options, model_name, ModelUse::kCompress);
  } catch (const CliError& error) {
    // The model follows --hq, not the checkpoint: say so for the likely mistake.
    if (options.checkpoint.empty() || options.hq) throw;
    throw CliError(std::string(error.what()) + " (a 48 kHz checkpoint needs --hq)");
  }
  EncodecModel model = std::move(*loaded);
  model.set_target_bandwidth(options.bandwidth_kbps);
  std::optional<LmModel> lm;
  if (options.lm) lm = load_lm(options, model.config());
  EcdcHeader header;
  header.model_name = model.name();
  header.audio_length = reader->length();
  header.num_codebooks = model.num_codebooks();
  header.use_lm = lm.has_value();
  if (options.portable_lm) header.lm_coder = kLmCoderDeterministic;
  if (lm) {
    const std::string problem = lm_fit_problem(*lm, model.config(), header.num_codebooks);
    if (!problem.empty()) throw CliError("cannot LM-code with this LM: " + problem);
  }
  const LmModel* lm_ptr = lm ? &*lm : nullptr;
  if (output_extension == kEcdcExtension) {
    commit_output(options, [&](const std::string& path) {
      write_stream_atomic(path, [&](std::ostream& out) {
        encode_to_ecdc(*reader, model, header, lm_ptr, out, options);
      });
    });
    return;
  }
  // Compress then decompress, through a .ecdc file beside the output, exactly
  // as a round trip via a file.
  commit_output(options, [&](const std::string& path) {
    detail::TempFile compressed(path);
    {
      std::ofstream out(compressed.path(), std::ios::binary | std::ios::trunc);
      encode_to_ecdc(*reader, model, header, lm_ptr, out, options);
      out.close();
      if (out.fail()) compressed.fail("writing the intermediate .ecdc file failed");
    }
    std::ifstream in(compressed.path(), std::ios::binary);
    if (!in) compressed.fail("reading the intermediate .ecdc file failed");
    const EcdcHeader written = read_ecdc_header(in);
    decode_to_wav(in, written, model, lm_ptr, path, options);
    compressed.discard();
  });
}

constexpr const char* kDescription =
    "High fidelity neural audio codec (EnCodec).\n"
    "If INPUT is a .ecdc file, decompresses it to .wav. Otherwise compresses INPUT (any format "
    "libsndfile reads; resampled and converted to the model's channels) to .ecdc, or, when OUTPUT "
    "ends in .wav, compresses and decompresses it in one go.";

constexpr const char* kFooter =
    "An existing OUTPUT is never replaced without -f; outputs appear only when complete.\n"
    "Models: the official checkpoints come from --model-dir, else $ENCODEC_MODEL_DIR, else the "
    "torch hub cache ($TORCH_HOME/hub/checkpoints, downloaded on first use); --checkpoint "
    "and --lm-checkpoint replace them. When the official 24 kHz model is not cached (and no "
    "--model-dir or $ENCODEC_MODEL_DIR is given), the demo model shipped with encodec-cpp "
    "(models/encodec_demo_24khz.th, or $ENCODEC_DEMO_MODEL) compresses instead of a download: "
    "a small model trained by this project, below the official quality; its files name it "
    "(encodec_demo_24khz) and decompress only with it, as official files only with the official "
    "model; --download fetches the official one.\n"
    "Exit status: 0 on success, 1 on errors, 2 on invalid arguments.";

}  // namespace

int run_encodec_cli(int argc, const char* const* argv) {
  CliOptions options;
  CLI::App app{kDescription, "encodec"};
  app.footer(kFooter);
  app.add_option("INPUT", options.input,
                 "Input file: audio to compress, or a .ecdc file to decompress")
      ->required();
  app.add_option("OUTPUT", options.output,
                 "Output file: .ecdc or .wav when compressing, .wav when decompressing "
                 "(default: INPUT with .ecdc when compressing, with .wav when decompressing)");
  app.add_option("-b,--bandwidth", options.bandwidth_kbps,
                 "Target bandwidth in kbps: 1.5, 3, 6, 12 or 24 (1.5 is not supported with --hq)")
      ->capture_default_str();
  app.add_flag("-f,--force", options.force, "Overwrite the output file if it exists");
  app.add_flag("--hq", options.hq,
               "Compress with the 48 kHz stereo model (default: the 24 kHz mono model)");
  app.add_flag("-l,--lm", options.lm,
               "Entropy-code the codes with the model's language model (smaller files with the "
               "official LMs; byte-compatible with the Python package's --lm where its BLAS "
               "kernels are those the golden files were made with: the LM's probabilities "
               "depend on them)");
  app.add_flag("--portable-lm", options.portable_lm,
               "Entropy-code with the language model on this project's deterministic kernels "
               "(implies --lm): the same bytes on every CPU (AVX-512, AVX2, plain x86-64) and "
               "thread count, which --lm does not promise. The file is marked \"lmk\": \"det1\" "
               "and decodes with encodec-cpp only: the Python package reads its header but its "
               "LM cannot decode it. Decompression needs no flag (the header names the coder)");
  app.add_flag("-r,--rescale", options.rescale,
               "Rescale the decoded audio so that its peak is 0.99 (otherwise samples beyond "
               "+-0.99 are clamped, with a warning)");
  app.add_option("-s,--decompress-suffix,--decompress_suffix", options.decompress_suffix,
                 "Suffix added to the stem of the default decompressed file name "
                 "(-s _dec: x.ecdc -> x_dec.wav)");
  app.add_flag("-q,--quiet", options.quiet,
               "No progress output (audio and download progress, shown only when stderr is a "
               "terminal); errors and warnings are still printed");
  app.add_option("--checkpoint", options.checkpoint,
                 "Load the codec from exactly this checkpoint file instead of the official one "
                 "(any width: inferred from the tensor shapes; no checksum). With --hq it must "
                 "be a 48 kHz checkpoint; when decompressing, the one the file's header names")
      ->check(CLI::ExistingFile);
  app.add_option("--lm-checkpoint", options.lm_checkpoint,
                 "Load the language model (for --lm, and for decompressing LM-coded files) from "
                 "exactly this checkpoint file instead of the official one (any width; no "
                 "checksum)")
      ->check(CLI::ExistingFile);
  app.add_option("--model-dir", options.model_dir,
                 "Look up the official checkpoint names in this folder instead of the torch hub "
                 "cache, with no download (default: $ENCODEC_MODEL_DIR)")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--download", options.download,
               "When the official 24 kHz checkpoint is not in the torch hub cache, download it "
               "instead of using the demo model");
  CLI::Option* reference_flag = app.add_flag("--reference", options.reference,
               "Run the Python package's own operations (LibTorch's, in its order) instead of "
               "the fast kernels: codes, .ecdc bytes and decoded WAV bytes identical to the "
               "Python package run with the same LibTorch, BLAS kernels and thread count. "
               "2-3x slower, and the 24 kHz model then holds the whole "
               "input (over 5 min it streams with the fast kernels unless --whole-file)");
  app.add_flag("--fast", options.fast,
               "The fast kernels: the default (accepted for scripts written when it was not). "
               "Their codes equal the Python package's to float rounding (a code on a near-tie "
               "can differ; the .ecdc stays readable by the Python package) and are the same "
               "on every thread count; the 24 kHz model streams, in bounded memory")
      ->excludes(reference_flag);
  app.add_flag("--whole-file", options.whole_file,
               "Process the whole input at once, as the Python package does, whatever its "
               "length (memory grows with it: about 0.5 GB per minute of 24 kHz audio). "
               "With --reference: the reference kernels even past 5 min of 24 kHz audio. With "
               "the fast kernels (the default): the offline fast path instead of streaming. The "
               "48 kHz model always runs chunk by chunk (the same bytes either way)");
  app.add_option("--stream-block", options.stream_block,
                 "Run the 24 kHz model through the streaming engine, pushing N samples at a "
                 "time (decompression: writing N at a time); not with --reference. The output is "
                 "byte-identical to the default (which streams with N = 9600)")
      ->check(CLI::PositiveNumber)
      ->excludes(reference_flag);
  app.add_option("--precision", options.precision,
                 "Arithmetic of the fast kernels: fp32, or bf16 (not with --reference; needs a CPU "
                 "with AVX512-BF16 and is refused without it). bf16 rounds weights and layer "
                 "inputs to bfloat16, summing in fp32: faster, with decoded audio about 40 dB "
                 "from fp32's; its .ecdc files are valid for any decoder, not byte-identical "
                 "to fp32 ones. Streams still equal files bit for bit in either precision")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  // No help text and no group: not shown by --help (benchmarks only).
  app.add_flag("--random-weights", options.random_weights)->group("");
  app.add_option("--threads", options.threads,
                 "Compute threads (default 0: LibTorch's default, one per core)")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help: CLI11 prints it and gives 0.
    if (error.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(error);
    std::cerr << "encodec: error: " << error.what() << "\n"
              << "Run with --help for more information.\n";
    return kExitUsage;
  }

  install_signal_cleanup();
  if (options.stream_block > 0) {
    if (options.hq) {
      std::cerr << "encodec: error: --stream-block needs the causal 24 kHz model; the 48 kHz "
                   "model (--hq) encodes 1 s chunks\n";
      return kExitUsage;
    }
    if (options.whole_file) {
      std::cerr << "encodec: error: --stream-block and --whole-file exclude each other\n";
      return kExitUsage;
    }
  }
  if (options.precision == "bf16") {
    if (options.reference) {
      std::cerr << "encodec: error: --precision bf16 runs the fast kernels; --reference runs the "
                   "Python package's operations in fp32\n";
      return kExitUsage;
    }
    // Refused before any work: bf16 without the instructions would be slower, not faster.
    const std::string reason = bf16_unavailable_reason();
    if (!reason.empty()) {
      std::cerr << "encodec: error: --precision bf16: " << reason << "\n";
      return kExitFailure;
    }
  }
  if (options.reference) options.fast = false;
  if (options.portable_lm) options.lm = true;
  try {
    if (options.threads > 0) torch::set_num_threads(options.threads);
    check_input(options);
    if (lowercase_extension(options.input) == kEcdcExtension) {
      run_decompress(options);
    } else {
      run_compress(options);
    }
    return 0;
  } catch (const c10::Error& error) {
    std::cerr << "encodec: error: " << error.what_without_backtrace() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "encodec: error: out of memory\n";
  } catch (const std::exception& error) {
    std::cerr << "encodec: error: " << error.what() << "\n";
  }
  return kExitFailure;
}

}  // namespace encodec
