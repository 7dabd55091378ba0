#include "encodec/cli.h"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "encodec/audio_io.h"
#include "encodec/compress.h"
#include "encodec/encodec.h"

namespace encodec {
namespace {
namespace fs = std::filesystem;

constexpr const char* kEcdcSuffix = ".ecdc";

struct CliOptions {
  std::string input;
  std::string output;
  double bandwidth_kbps = 6.0;
  bool force = false;
  bool hq = false;
  bool lm = false;
  bool rescale = false;
  bool quiet = false;
  std::string decompress_suffix;
  std::string checkpoint;
  std::string lm_checkpoint;
  std::string model_dir;
  int threads = 0;
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

void check_output_path(const CliOptions& options) {
  const fs::path output(options.output);
  const fs::path folder = output.has_parent_path() ? output.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw CliError("output folder " + folder.string() + " for " + options.output + " does not exist");
  }
  if (fs::exists(output, ec) && fs::equivalent(output, fs::path(options.input), ec)) {
    throw CliError("output " + options.output + " is the input file");
  }
  if (fs::exists(output, ec) && !options.force) {
    throw CliError("output file " + options.output + " exists; use -f / --force to overwrite it");
  }
}

// Loads the codec named `model_name`: from --checkpoint when given, otherwise
// the official checkpoint through the model store.
EncodecModel load_model(const CliOptions& options, const std::string& model_name) {
  if (!options.checkpoint.empty()) {
    return EncodecModel::from_checkpoint(options.checkpoint, model_name);
  }
  ModelStoreOptions store;
  if (!options.model_dir.empty()) store.model_dir = options.model_dir;
  store.show_progress = !options.quiet;
  if (model_name == "encodec_24khz") return EncodecModel::encodec_model_24khz(store);
  if (model_name == "encodec_48khz") return EncodecModel::encodec_model_48khz(store);
  throw CliError("the audio was compressed with an unsupported model '" + model_name + "'");
}

void warn_if_clipping(const torch::Tensor& wav, const CliOptions& options) {
  if (options.rescale) return;
  const float peak = wav.numel() ? wav.abs().max().item<float>() : 0.0f;
  constexpr float kLimit = 0.99f;
  if (peak > kLimit) {
    std::cerr << "encodec: warning: clipping: peak " << peak << " exceeds " << kLimit
              << "; use -r / --rescale to rescale the output instead\n";
  }
}

void write_decoded(const DecompressedAudio& audio, const CliOptions& options) {
  warn_if_clipping(audio.samples, options);
  WavWriteOptions wav_options;
  wav_options.rescale = options.rescale;
  write_wav_atomic(options.output, audio.samples, audio.sample_rate_hz, wav_options);
}

void run_decompress(CliOptions& options) {
  if (options.output.empty()) {
    fs::path output(options.input);
    output.replace_filename(output.stem().string() + options.decompress_suffix + ".wav");
    options.output = output.string();
  } else if (lowercase_extension(options.output) != ".wav") {
    throw CliError("output " + options.output + ": decompressed output must be a .wav file");
  }
  check_output_path(options);
  std::ifstream in(options.input, std::ios::binary);
  if (!in) throw CliError("cannot open " + options.input);
  const DecompressedAudio audio =
      decompress_from_stream(in, [&](const std::string& name) { return load_model(options, name); });
  write_decoded(audio, options);
}

void run_compress(CliOptions& options) {
  if (options.output.empty()) {
    options.output = fs::path(options.input).replace_extension(kEcdcSuffix).string();
  }
  const std::string output_extension = lowercase_extension(options.output);
  if (output_extension != kEcdcSuffix && output_extension != ".wav") {
    throw CliError("output " + options.output + ": extension must be .ecdc (compress) or .wav " +
                   "(compress then decompress)");
  }
  check_output_path(options);
  const std::string model_name = options.hq ? "encodec_48khz" : "encodec_24khz";
  const EncodecConfig official =
      options.hq ? EncodecConfig::official_48khz() : EncodecConfig::official_24khz();
  const auto& allowed = official.target_bandwidths;
  if (std::find(allowed.begin(), allowed.end(), options.bandwidth_kbps) == allowed.end()) {
    std::ostringstream message;
    message << "bandwidth " << options.bandwidth_kbps << " kbps is not supported by " << model_name
            << " (choose one of " << format_bandwidths(allowed) << ")";
    throw CliError(message.str());
  }
  if (options.lm) {
    throw CliError("--lm (LM entropy coding) is not available in this build yet");
  }
  // Read the input before loading the model so that a bad input fails fast.
  const Audio input = read_audio(options.input);
  EncodecModel model = load_model(options, model_name);
  model.set_target_bandwidth(options.bandwidth_kbps);
  const torch::Tensor wav = convert_audio(input.samples, input.sample_rate_hz,
                                          model.sample_rate_hz(), model.channels());
  if (wav.size(1) == 0) throw CliError("input " + options.input + " has no samples");
  const std::string compressed = compress(model, wav, options.lm);
  if (output_extension == kEcdcSuffix) {
    write_file_atomic(options.output, compressed);
    return;
  }
  const DecompressedAudio audio =
      decompress(compressed, [&](const std::string&) { return model; });
  write_decoded(audio, options);
}

}  // namespace

int run_encodec_cli(int argc, const char* const* argv) {
  CliOptions options;
  CLI::App app{
      "High fidelity neural audio codec (EnCodec). If INPUT is a .ecdc file, decompresses it to "
      ".wav. Otherwise compresses INPUT (any format libsndfile reads) to .ecdc; if OUTPUT ends in "
      ".wav, compresses and decompresses in one go.",
      "encodec"};
  app.add_option("input", options.input, "Input file: audio to compress, or .ecdc to decompress")
      ->required();
  app.add_option("output", options.output,
                 "Output file (default: INPUT with .ecdc when compressing, .wav when decompressing)");
  app.add_option("-b,--bandwidth", options.bandwidth_kbps,
                 "Target bandwidth in kbps: 1.5, 3, 6, 12 or 24 (1.5 is not supported with --hq)")
      ->capture_default_str();
  app.add_flag("-f,--force", options.force, "Overwrite the output file if it exists");
  app.add_flag("--hq", options.hq, "Use the 48 kHz stereo model (default: 24 kHz mono)");
  app.add_flag("-l,--lm", options.lm,
               "Entropy-code the codes with the language model (smaller files, slower)");
  app.add_flag("-r,--rescale", options.rescale,
               "Rescale the decoded audio to avoid clipping (otherwise it is clamped to +-0.99)");
  app.add_option("-s,--decompress-suffix", options.decompress_suffix,
                 "Suffix added to the stem of the default decompressed file name");
  app.add_flag("-q,--quiet", options.quiet, "No progress output");
  app.add_option("--checkpoint", options.checkpoint,
                 "Load the codec from exactly this checkpoint file (any width; no checksum)")
      ->check(CLI::ExistingFile);
  app.add_option("--lm-checkpoint", options.lm_checkpoint,
                 "Load the language model from exactly this checkpoint file (no checksum)")
      ->check(CLI::ExistingFile);
  app.add_option("--model-dir", options.model_dir,
                 "Look for the official checkpoints in this folder instead of the torch hub "
                 "cache, with no download (default: $ENCODEC_MODEL_DIR)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--threads", options.threads,
                 "Compute threads (default 0: LibTorch's default, one per core)")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }

  try {
    if (options.threads > 0) torch::set_num_threads(options.threads);
    std::error_code ec;
    if (!fs::exists(options.input, ec)) throw CliError("input file " + options.input + " does not exist");
    if (lowercase_extension(options.input) == kEcdcSuffix) {
      run_decompress(options);
    } else {
      run_compress(options);
    }
    return 0;
  } catch (const c10::Error& error) {
    std::cerr << "encodec: error: " << error.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "encodec: error: " << error.what() << "\n";
    return 1;
  }
}

}  // namespace encodec
