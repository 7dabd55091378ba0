#include "transcode_service.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <streambuf>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "encodec/compress.h"
#include "encodec/file_coding.h"
#include "encodec/live_model.h"
#include "encodec/model_store.h"

namespace encodec::server {

namespace {

constexpr const char* kEcdcContentType = "application/octet-stream";
constexpr const char* kWavContentType = "audio/wav";
// Workers yield to the real-time compute thread.
constexpr int kWorkerNice = 10;

// A job stopped because the server stops or the job was cancelled.
struct JobCancelled {};

// Reads a string's bytes in place (the body is not copied again).
class MemoryStreamBuffer : public std::streambuf {
 public:
  explicit MemoryStreamBuffer(const std::string& bytes) {
    char* begin = const_cast<char*>(bytes.data());
    setg(begin, begin, begin + bytes.size());
  }
};

// `key=value&key=value`, values percent-decoded. False on a malformed escape.
bool parse_query(const std::string& query, std::map<std::string, std::string>* parameters,
                 std::string* error) {
  std::istringstream in(query);
  std::string pair;
  while (std::getline(in, pair, '&')) {
    if (pair.empty()) continue;
    const size_t equals = pair.find('=');
    const std::string key = pair.substr(0, equals);
    const std::string raw = equals == std::string::npos ? "" : pair.substr(equals + 1);
    std::string value;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '+') {
        value += ' ';
      } else if (raw[i] == '%') {
        if (i + 2 >= raw.size() || !std::isxdigit(static_cast<unsigned char>(raw[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(raw[i + 2]))) {
          *error = "malformed percent escape in query parameter '" + key + "'";
          return false;
        }
        value += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        value += raw[i];
      }
    }
    (*parameters)[key] = value;
  }
  return true;
}

// The parameters of a request: each known one read once; unknown ones are errors.
class QueryParameters {
 public:
  QueryParameters(const std::string& query, HttpAnswer* error) : error_(error) {
    std::string problem;
    if (!parse_query(query, &values_, &problem)) fail(problem);
  }
  bool ok() const { return ok_; }

  std::string text(const std::string& key, const std::string& fallback) {
    known_.push_back(key);
    const auto found = values_.find(key);
    return found == values_.end() ? fallback : found->second;
  }
  bool flag(const std::string& key) {
    const std::string value = text(key, "0");
    if (value == "1" || value == "true") return true;
    if (value != "0" && value != "false") fail("query parameter " + key + "=" + value + ": give 0 or 1");
    return false;
  }
  // Fails naming the first parameter that no text() or flag() asked for.
  void reject_unknown(const std::string& allowed) {
    for (const auto& [key, value] : values_) {
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) {
        fail("unknown query parameter '" + key + "' (allowed: " + allowed + ")");
        return;
      }
    }
  }
  void fail(const std::string& message) {
    if (!ok_) return;
    ok_ = false;
    *error_ = HttpAnswer::json_error(400, message);
  }

 private:
  HttpAnswer* error_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> known_;
  bool ok_ = true;
};

std::string new_job_id() {
  static std::mutex mutex;
  static std::random_device device;
  static std::mt19937_64 generator(
      (static_cast<uint64_t>(device()) << 32) ^ device() ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::lock_guard<std::mutex> lock(mutex);
  char id[33];
  std::snprintf(id, sizeof(id), "%016llx%016llx", static_cast<unsigned long long>(generator()),
                static_cast<unsigned long long>(generator()));
  return id;
}

std::string error_text(const std::exception& error) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&error)) {
    return torch_error->what_without_backtrace();
  }
  return error.what();
}

const char* state_name(TranscodeJob::State state) {
  switch (state) {
    case TranscodeJob::State::kQueued: return "queued";
    case TranscodeJob::State::kRunning: return "running";
    case TranscodeJob::State::kDone: return "done";
  }
  return "unknown";
}

std::string official_codec_file(const std::string& model_name) {
  return model_name == kModelName48kHz ? kCheckpoint48kHz : kCheckpoint24kHz;
}

// Collects a decode job's audio in a WAV file, as the CLI writes it.
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in) throw std::runtime_error("cannot read back the decoded audio " + path);
  return bytes.str();
}

}  // namespace

HttpAnswer HttpAnswer::json_error(unsigned status, const std::string& message) {
  return {status, "application/json", nlohmann::json{{"error", message}}.dump() + "\n", {}};
}

TranscodeModels::TranscodeModels(TranscodeModelSources sources) : sources_(std::move(sources)) {}

EncodecModel TranscodeModels::codec(const std::string& model_name) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = codecs_.find(model_name);
  if (found != codecs_.end()) return found->second;
  const bool hq = model_name == kModelName48kHz;
  // The fast kernels only: the CLI's default (coding_for), so the same bytes.
  EncodecModel model = [&] {
    if (sources_.random_weights) {
      return EncodecModel::with_random_weights(
          hq ? EncodecConfig::official_48khz() : EncodecConfig::official_24khz(), 0, KernelSet::kFastOnly);
    }
    const bool demo = model_name == kModelNameDemo24kHz;
    std::string path = hq ? sources_.checkpoint_48khz : demo ? sources_.demo_checkpoint_24khz : sources_.checkpoint_24khz;
    try {
      if (demo && path.empty()) throw std::runtime_error("this server has no demo model");
      if (path.empty()) path = cached_official_checkpoint(official_codec_file(model_name), sources_.model_dir);
      return EncodecModel::from_checkpoint(path, model_name, KernelSet::kFastOnly);
    } catch (const std::exception& error) {
      throw std::runtime_error("this server cannot load " + model_name +
                               (path.empty() ? "" : " from " + path) + ": " + error_text(error));
    }
  }();
  spdlog::info("transcoding: loaded {}", model_name);
  return codecs_.emplace(model_name, std::move(model)).first->second;
}

const LmModel& TranscodeModels::lm(const std::string& model_name) {
  const EncodecModel codec_model = codec(model_name);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = lms_[model_name];
  if (slot) return *slot;
  const bool hq = model_name == kModelName48kHz;
  std::string path = hq ? sources_.lm_checkpoint_48khz : sources_.lm_checkpoint_24khz;
  try {
    if (path.empty()) {
      path = cached_official_checkpoint(LmModel::official_checkpoint_name(model_name), sources_.model_dir);
    }
    // The LM's default kernels, as the CLI's --lm runs them (the same bytes).
    slot = std::make_unique<LmModel>(LmModel::from_checkpoint(path, codec_model.config()));
  } catch (const std::exception& error) {
    throw std::runtime_error("this server cannot load the LM of " + model_name +
                             (path.empty() ? "" : " from " + path) + ": " + error_text(error));
  }
  return *slot;
}

TranscodeService::TranscodeService(const HttpOptions& options, TranscodeModels& models)
    : options_(options), models_(models) {
  if (options_.work_dir.empty()) options_.work_dir = std::filesystem::temp_directory_path().string();
  for (int i = 0; i < std::max(1, options_.transcode_workers); ++i) {
    workers_.emplace_back([this] { work(); });
  }
}

TranscodeService::~TranscodeService() { stop(); }

void TranscodeService::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

std::shared_ptr<TranscodeJob> TranscodeService::check_encode(const std::string& query,
                                                             std::shared_ptr<const std::string> body,
                                                             HttpAnswer* error) const {
  QueryParameters parameters(query, error);
  const std::string model = parameters.text("model", "24khz");
  const std::string bandwidth_text = parameters.text("bandwidth", "6");
  const bool lm = parameters.flag("lm");
  parameters.reject_unknown("model, bandwidth, lm");
  if (!parameters.ok()) return nullptr;
  if (model != "24khz" && model != "48khz") {
    *error = HttpAnswer::json_error(400, "query parameter model=" + model + ": give 24khz or 48khz");
    return nullptr;
  }
  const EncodecConfig official =
      model == "48khz" ? EncodecConfig::official_48khz() : EncodecConfig::official_24khz();
  double bandwidth = 0.0;
  size_t parsed = 0;
  try {
    bandwidth = std::stod(bandwidth_text, &parsed);
  } catch (const std::exception&) {
    parsed = 0;
  }
  const auto& allowed = official.target_bandwidths;
  if (parsed != bandwidth_text.size() ||
      std::find(allowed.begin(), allowed.end(), bandwidth) == allowed.end()) {
    std::ostringstream message;
    message << "query parameter bandwidth=" << bandwidth_text << ": " << official.name
            << " supports ";
    for (size_t i = 0; i < allowed.size(); ++i) message << (i ? ", " : "") << allowed[i];
    message << " kbps";
    *error = HttpAnswer::json_error(400, message.str());
    return nullptr;
  }
  if (body->empty()) {
    *error = HttpAnswer::json_error(400, "the request body is empty: send an audio file");
    return nullptr;
  }
  // A server running the demo model encodes 24 kHz with it.
  const bool demo = model == "24khz" && !options_.models.demo_checkpoint_24khz.empty();
  if (demo && lm) {
    *error = HttpAnswer::json_error(400, "query parameter lm: this server runs the demo model, which has no LM");
    return nullptr;
  }
  auto job = std::make_shared<TranscodeJob>();
  job->kind = TranscodeJob::Kind::kEncode;
  job->model_name = demo ? kModelNameDemo24kHz : official.name;
  job->bandwidth_kbps = bandwidth;
  job->lm = lm;
  try {
    job->reader.emplace(body, "the request body", official.sample_rate_hz, official.channels);
  } catch (const std::exception& failure) {
    *error = HttpAnswer::json_error(400, std::string(failure.what()) +
                                             " (send an audio file libsndfile reads: WAV, FLAC, Ogg, ...)");
    return nullptr;
  }
  if (job->reader->input_frames() == 0) {
    *error = HttpAnswer::json_error(400, "the audio in the request body has no samples");
    return nullptr;
  }
  job->audio_length = job->reader->length();
  job->audio_seconds = static_cast<double>(job->audio_length) / official.sample_rate_hz;
  job->input = std::move(body);
  job->asynchronous = job->audio_seconds > options_.sync_limit_seconds;
  if (job->audio_seconds > options_.max_audio_seconds) {
    *error = HttpAnswer::json_error(
        413, "the audio lasts " + std::to_string(job->audio_seconds) + " s; this server takes at most " +
                 std::to_string(options_.max_audio_seconds) + " s");
    return nullptr;
  }
  return job;
}

std::shared_ptr<TranscodeJob> TranscodeService::check_decode(const std::string& query,
                                                             std::shared_ptr<const std::string> body,
                                                             HttpAnswer* error) const {
  QueryParameters parameters(query, error);
  const bool rescale = parameters.flag("rescale");
  parameters.reject_unknown("rescale");
  if (!parameters.ok()) return nullptr;
  MemoryStreamBuffer buffer(*body);
  std::istream in(&buffer);
  EcdcHeader header;
  try {
    header = read_ecdc_header(in);
  } catch (const std::exception& failure) {
    *error = HttpAnswer::json_error(400, std::string("the request body is not a .ecdc file: ") + failure.what());
    return nullptr;
  }
  if (!is_known_model_name(header.model_name)) {
    *error = HttpAnswer::json_error(400, "the .ecdc file was made with an unsupported model '" +
                                             header.model_name + "' (known: " + known_model_names() + ")");
    return nullptr;
  }
  auto job = std::make_shared<TranscodeJob>();
  job->kind = TranscodeJob::Kind::kDecode;
  job->model_name = header.model_name;
  job->lm = header.use_lm;
  job->rescale = rescale;
  const EncodecConfig official = header.model_name == kModelName48kHz ? EncodecConfig::official_48khz()
                                                                      : EncodecConfig::official_24khz();
  job->audio_length = header.audio_length;
  job->audio_seconds = static_cast<double>(header.audio_length) / official.sample_rate_hz;
  job->input = std::move(body);
  job->asynchronous = job->audio_seconds > options_.sync_limit_seconds;
  if (job->audio_seconds > options_.max_audio_seconds) {
    *error = HttpAnswer::json_error(
        413, "the .ecdc file holds " + std::to_string(job->audio_seconds) +
                 " s of audio; this server decodes at most " + std::to_string(options_.max_audio_seconds) + " s");
    return nullptr;
  }
  return job;
}

std::optional<HttpAnswer> TranscodeService::submit(std::shared_ptr<TranscodeJob> job) {
  std::lock_guard<std::mutex> lock(mutex_);
  forget_expired_locked();
  if (stopping_) return HttpAnswer::json_error(503, "the server is shutting down");
  if (queue_.size() >= options_.queue_capacity) {
    HttpAnswer full = HttpAnswer::json_error(
        503, "the transcoding queue is full (" + std::to_string(queue_.size()) + " jobs waiting); retry later");
    full.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds_locked()));
    return full;
  }
  job->id = new_job_id();
  if (job->asynchronous) jobs_[job->id] = job;
  queue_.push_back(std::move(job));
  wake_.notify_one();
  return std::nullopt;
}

int TranscodeService::retry_after_seconds_locked() const {
  const double workers = std::max(1, options_.transcode_workers);
  const double backlog = static_cast<double>(queue_.size() + running_) * mean_job_seconds_ / workers;
  return std::max(1, static_cast<int>(std::ceil(backlog)));
}

void TranscodeService::forget_expired_locked() {
  const auto now = std::chrono::steady_clock::now();
  const auto ttl = std::chrono::seconds(options_.job_ttl_seconds);
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const bool expired = it->second->state.load() == TranscodeJob::State::kDone && now - it->second->finished > ttl;
    it = expired ? jobs_.erase(it) : std::next(it);
  }
}

HttpAnswer TranscodeService::job_status(const std::string& id) {
  std::shared_ptr<TranscodeJob> job;
  size_t position = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    forget_expired_locked();
    const auto found = jobs_.find(id);
    if (found == jobs_.end()) {
      return HttpAnswer::json_error(404, "no job '" + id + "' (unknown, cancelled, or its result expired after " +
                                             std::to_string(options_.job_ttl_seconds) + " s)");
    }
    job = found->second;
    const auto queued = std::find(queue_.begin(), queue_.end(), job);
    if (queued != queue_.end()) position = static_cast<size_t>(queued - queue_.begin()) + 1;
  }
  const TranscodeJob::State state = job->state.load();
  if (state == TranscodeJob::State::kDone) return job->answer;
  nlohmann::json status = {{"job", job->id},
                           {"status", state_name(state)},
                           {"progress", job->audio_seconds > 0 ? job->seconds_done.load() / job->audio_seconds : 0.0},
                           {"audio_seconds", job->audio_seconds}};
  if (position > 0) status["queue_position"] = position;
  return {202, "application/json", status.dump() + "\n", {}};
}

HttpAnswer TranscodeService::cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = jobs_.find(id);
  if (found == jobs_.end()) return HttpAnswer::json_error(404, "no job '" + id + "'");
  const std::shared_ptr<TranscodeJob> job = found->second;
  jobs_.erase(found);
  job->cancelled = true;
  queue_.erase(std::remove(queue_.begin(), queue_.end(), job), queue_.end());
  return {200, "application/json", nlohmann::json{{"job", id}, {"status", "cancelled"}}.dump() + "\n", {}};
}

size_t TranscodeService::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

size_t TranscodeService::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

void TranscodeService::work() {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), kWorkerNice);
  at::set_num_threads(std::max(1, options_.transcode_threads));
  while (true) {
    std::shared_ptr<TranscodeJob> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    job->state = TranscodeJob::State::kRunning;
    const auto start = std::chrono::steady_clock::now();
    HttpAnswer answer = run(*job);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    job->answer = std::move(answer);
    job->finished = std::chrono::steady_clock::now();
    job->reader.reset();
    job->input.reset();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
      mean_job_seconds_ = 0.8 * mean_job_seconds_ + 0.2 * seconds;
    }
    job->state = TranscodeJob::State::kDone;
    if (job->on_done) job->on_done(job->answer);
  }
}

HttpAnswer TranscodeService::run(TranscodeJob& job) {
  try {
    return job.kind == TranscodeJob::Kind::kEncode ? encode(job) : decode(job);
  } catch (const JobCancelled&) {
    return HttpAnswer::json_error(503, "the job was stopped: cancelled, or the server is shutting down");
  } catch (const EcdcFormatError& error) {
    return HttpAnswer::json_error(400, std::string("the .ecdc file is corrupt: ") + error.what());
  } catch (const AudioError& error) {
    return HttpAnswer::json_error(400, error.what());
  } catch (const std::exception& error) {
    spdlog::warn("transcoding job {} failed: {}", job.id, error_text(error));
    return HttpAnswer::json_error(500, "transcoding failed: " + error_text(error));
  }
}

namespace {

// What the CLI runs by default (no --reference): the fast kernels, the causal
// 24 kHz model through the streaming engine (its bytes equal the offline fast
// path's), the 48 kHz model chunk by chunk.
FileCoding coding_for(const EncodecModel& model, TranscodeJob& job, const std::atomic<bool>& stopping) {
  FileCoding coding;
  coding.streaming = streams_by_default(model.config());
  coding.progress = [&job, &stopping](double seconds) {
    job.seconds_done = seconds;
    if (stopping || job.cancelled) throw JobCancelled{};
  };
  return coding;
}

}  // namespace

HttpAnswer TranscodeService::encode(TranscodeJob& job) {
  EncodecModel model = models_.codec(job.model_name);
  model.set_target_bandwidth(job.bandwidth_kbps);
  const LmModel* lm = nullptr;
  if (job.lm) {
    lm = &models_.lm(job.model_name);
    const std::string problem = lm_fit_problem(*lm, model.config(), model.num_codebooks());
    if (!problem.empty()) throw std::runtime_error("the server's LM cannot code this: " + problem);
  }
  EcdcHeader header;
  header.model_name = model.name();
  header.audio_length = job.audio_length;
  header.num_codebooks = model.num_codebooks();
  header.use_lm = lm != nullptr;
  const FileCoding coding = coding_for(model, job, stopping_);
  std::ostringstream out;
  encode_audio_file(*job.reader, model, header, lm, out, coding);
  HttpAnswer answer{200, kEcdcContentType, out.str(), {}};
  answer.headers.emplace_back("Content-Disposition", "attachment; filename=\"audio.ecdc\"");
  return answer;
}

HttpAnswer TranscodeService::decode(TranscodeJob& job) {
  EncodecModel model = models_.codec(job.model_name);
  const LmModel* lm = job.lm ? &models_.lm(job.model_name) : nullptr;
  MemoryStreamBuffer buffer(*job.input);
  std::istream in(&buffer);
  const EcdcHeader header = read_ecdc_header(in);
  const FileCoding coding = coding_for(model, job, stopping_);
  const std::string path =
      (std::filesystem::path(options_.work_dir) / ("encodecd-job-" + job.id + ".wav")).string();
  WavFileOptions wav_options;
  wav_options.rescale = job.rescale;
  float peak = 0.0f;
  {
    WavFileWriter writer(path, model.sample_rate_hz(), model.channels(), wav_options);
    decode_ecdc_file(in, header, model, lm, writer, coding);
    peak = writer.peak();
    writer.commit();
  }
  struct RemoveOnExit {
    const std::string& path;
    ~RemoveOnExit() { std::filesystem::remove(path); }
  } remove_on_exit{path};
  HttpAnswer answer{200, kWavContentType, read_file(path), {}};
  answer.headers.emplace_back("Content-Disposition", "attachment; filename=\"audio.wav\"");
  if (!job.rescale && peak > 0.99f) {
    answer.headers.emplace_back("Warning", "199 encodecd \"clipping: peak " + std::to_string(peak) +
                                               " exceeds 0.99; decode with rescale=1 to rescale instead\"");
  }
  return answer;
}

}  // namespace encodec::server
