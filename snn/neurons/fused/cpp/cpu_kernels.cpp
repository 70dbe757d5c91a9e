// Fused CPU time loops for the AdEx (LIFAdEx), LIF and LI neurons of snn.neurons.
//
// The equations are those of lif_adex_feed_forward_step, lif_feed_forward_step and
// li_feed_forward_step, written with the same operations in the same order so that every
// intermediate rounds like eager PyTorch (compile with -ffp-contract=off: no fused multiply-add).
// The exponential is MKL's vmsExp/vmdExp in the mode ATen's vml.h uses for torch.exp, so spikes
// and states are bit-identical to the step-by-step loop.
//
// Layout: x, z, saved tensors are [T, M] (M neurons, contiguous); states are [M]. A parameter k is
// params[k] with vector[k] = 1 for one value per neuron ([M]) or 0 for a single value.
// OpenMP threads take tiles of neurons and run all T steps over each tile, so a tile's state
// stays in L1 and memory traffic is one read of x and one write of z and of the saved pre-reset
// voltage per neuron and step (backward: one read of the saved voltage, one write of the input
// gradient). Rows are written with non-temporal stores (store_row) and read rows are prefetched
// two steps ahead (prefetch_row); the kernels run close to this machine's memory bandwidth
// (benchmarks/RESULTS.md). Tiles are handed out dynamically: on a shared machine a thread that
// loses its core does not hold the others up at the end of the loop.
//
// The recurrent loops (recurrent_forward/recurrent_backward, at the end) run a whole recurrent
// layer in one call: per step, the products through BLAS's GEMM as torch calls it, then these
// kernels for that one step.
//
// Inputs (x forward, the output gradient backward) may be strided views: row t of neuron block n0
// starts at base + t * ts + n0 * ns with ns = 1 (contiguous neurons; ts = 0 for an input broadcast
// over time) or ns = 0 (one value per step, e.g. the gradient of outputs.sum()).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SNN_X86 1
#endif

// MKL, as exported by libtorch_cpu. Weak: without MKL the library still loads and runs LIF and
// LI (vml_available() tells the backend's why_not whether the VML functions were found); without
// the service function the kernels run without asking MKL for one thread.
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));
extern "C" void vmsExp(int n, const float* a, float* r, long long mode) __attribute__((weak));
extern "C" void vmdExp(int n, const double* a, double* r, long long mode) __attribute__((weak));
extern "C" void vmsTanh(int n, const float* a, float* r, long long mode) __attribute__((weak));
extern "C" void vmdTanh(int n, const double* a, double* r, long long mode) __attribute__((weak));
// BLAS's Fortran GEMM, the function torch's CPU matrix products call (at::native::cpublas::gemm):
// the native recurrent loops below multiply through it with torch's own arguments.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));
extern "C" void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
                       const double* beta, double* c, const int* ldc) __attribute__((weak));

namespace {

#if defined(__GNUC__)
#define SNN_INLINE __attribute__((always_inline)) inline
#else
#define SNN_INLINE inline
#endif

// VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE: the mode of ATen/cpu/vml.h's vexp.
constexpr long long kVmlMode = 0x2 | 0x140000 | 0x100;
// Neurons per tile: small enough that a tile's state, parameters and scratch rows stay in a
// 48 KiB L1, large enough to amortise the per-row work (the sizes tried: benchmarks/RESULTS.md,
// "Why the kernels look the way they do"). -DSNN_TILE=... to experiment.
#ifndef SNN_TILE
#define SNN_TILE 256
#endif
constexpr int64_t kTile = SNN_TILE;
// EXP_ARGUMENT_MAX of snn/neurons/adex.py: the largest argument of the AdEx exponential.
constexpr double kExpMax = 20.0;

inline void vexp(int64_t n, const float* a, float* r) { vmsExp(static_cast<int>(n), a, r, kVmlMode); }
inline void vexp(int64_t n, const double* a, double* r) { vmdExp(static_cast<int>(n), a, r, kVmlMode); }
inline void vtanh(int64_t n, const float* a, float* r) { vmsTanh(static_cast<int>(n), a, r, kVmlMode); }
inline void vtanh(int64_t n, const double* a, double* r) { vmdTanh(static_cast<int>(n), a, r, kVmlMode); }

// Row t of a strided [T, M] input for the neurons n0 .. n0 + n (see the header); a broadcast value
// is spread into buf so that the loops that read it stay vectorised.
template <typename T>
SNN_INLINE const T* row(const T* base, int64_t t, int64_t ts, int64_t ns, int64_t n0, int64_t n, T* buf) {
  if (ns) return base + t * ts + n0;
  std::fill(buf, buf + n, base[t * ts]);
  return buf;
}

// Writes a finished row of a tile (computed in a local buffer) to its [T, M] tensor. On x86 the
// stores are non-temporal when the destination is aligned: the row is read again only by a later
// pass over all of memory, so writing around the caches saves reading every line in before it is
// overwritten. for_each_tile fences them before returning.
// Whether the kernels' outputs (spikes forward, the input gradient backward) may be written around
// the caches on this thread: the recurrent loops read each step's at once (the next product's
// operand) and turn it off. The saved rows stream either way: they are read a whole pass later.
thread_local bool t_stream_rows = true;

template <typename T>
SNN_INLINE void store_row(T* dst, const T* src, int64_t n, bool streaming = true) {
#if defined(SNN_X86) && defined(__AVX512F__)
  using Vec = __m512i;
  auto stream = [](T* d, const T* s) { _mm512_stream_si512(reinterpret_cast<Vec*>(d), _mm512_loadu_si512(s)); };
#elif defined(SNN_X86) && defined(__AVX__)
  using Vec = __m256i;
  auto stream = [](T* d, const T* s) {
    _mm256_stream_si256(reinterpret_cast<Vec*>(d), _mm256_loadu_si256(reinterpret_cast<const Vec*>(s)));
  };
#elif defined(SNN_X86)
  using Vec = __m128i;
  auto stream = [](T* d, const T* s) {
    _mm_stream_si128(reinterpret_cast<Vec*>(d), _mm_loadu_si128(reinterpret_cast<const Vec*>(s)));
  };
#endif
#if defined(SNN_X86)
  constexpr int64_t per = sizeof(Vec) / sizeof(T);
  if (streaming && (reinterpret_cast<uintptr_t>(dst) & (sizeof(Vec) - 1)) == 0) {
    int64_t k = 0;
    for (; k + per <= n; k += per) stream(dst + k, src + k);
    for (; k < n; ++k) dst[k] = src[k];
    return;
  }
#endif
  std::memcpy(dst, src, n * sizeof(T));
}

// Steps ahead at which a tile prefetches the rows it will read: each step reads rows of a few
// KiB that lie a whole [M] row apart, a stride the hardware prefetcher does not follow across
// pages, so every step would start by waiting on memory (distances tried: RESULTS.md).
constexpr int64_t kAhead = 2;

// Prefetches row t of a [T, M] input (strides as in row()) for neurons n0 .. n0 + n, if it exists
// and is not a broadcast value. Always inlined: a call in the step loop made the compiler spill
// the tile's vector registers around it.
template <typename T>
SNN_INLINE void prefetch_row(const T* base, int64_t t, int64_t steps, int64_t ts, int64_t ns, int64_t n0, int64_t n) {
  if (base == nullptr || ns == 0 || t < 0 || t >= steps) return;
  const char* bytes = reinterpret_cast<const char*>(base + t * ts + n0);
  for (int64_t b = 0; b < n * int64_t(sizeof(T)); b += 64) __builtin_prefetch(bytes + b, 0, 3);
}

// The spike of a pre-reset voltage, z = [v_d - v_th > 0], and the voltage after the reset,
// (1 - z) v_d + z v_reset, with the step functions' operations (both products by z are exact).
template <typename T>
SNN_INLINE T spike(T vd, T vth) { return (vd - vth) > T(0) ? T(1) : T(0); }
template <typename T>
SNN_INLINE T after_reset(T vd, T z, T vr) { return (T(1) - z) * vd + z * vr; }

// The voltage entering step t of a tile (backward): v0 at t = 0, else step t - 1's after its reset.
template <typename T>
SNN_INLINE void entering_voltage(const T* vd_saved, const T* v0, int64_t t, int64_t M, int64_t n0, int64_t n,
                                 const T* vth, const T* vr, T* v) {
  if (t == 0) {
    std::memcpy(v, v0 + n0, n * sizeof(T));
    return;
  }
  const T* vdp = vd_saved + (t - 1) * M + n0;
  for (int64_t k = 0; k < n; ++k) v[k] = after_reset(vdp[k], spike(vdp[k], vth[k]), vr[k]);
}

// The leaky membrane of LIF and LI: v + c_mem ((v_leak - v) + i_jump).
template <typename T>
SNN_INLINE T leaky_membrane(T v, T c_mem, T vl, T ij) { return v + c_mem * ((vl - v) + ij); }

// The gradient of i + x (the input's, and the synaptic current's before the step) from that of
// the membrane drive (g_drive = c_mem g_vd) and that of the decayed current (gi). The names of
// the backward loops below are those of python/feed_forward.py's step backward functions.
template <typename T>
SNN_INLINE T input_gradient(T g_drive, T gi, T c_syn) { return g_drive + (gi + gi * c_syn); }

enum Surrogate { kSuper = 0, kTriangle = 1, kSigmoid = 2, kAtan = 3, kTanh = 4, kHeaviside = 5 };

// out[k] = sigma'(x[k]; alpha), the derivatives of snn/neurons/surrogate.py (n <= kTile). The
// exponential and tanh are MKL's vector functions: libm's scalar ones would not vectorise.
template <typename T>
void surrogate(int method, T alpha, const T* x, T* out, int64_t n) {
  T u[kTile];
  switch (method) {
    case kSuper:
      for (int64_t k = 0; k < n; ++k) { T d = alpha * std::abs(x[k]) + T(1); out[k] = T(1) / (d * d); }
      break;
    case kTriangle:
      for (int64_t k = 0; k < n; ++k) out[k] = alpha * std::max(T(0), T(1) - alpha * std::abs(x[k]));
      break;
    case kSigmoid:  // s = 1 / (1 + exp(-alpha x)): exp -> inf gives s = 0, no NaN
      for (int64_t k = 0; k < n; ++k) u[k] = -alpha * x[k];
      vexp(n, u, u);
      for (int64_t k = 0; k < n; ++k) { const T s = T(1) / (T(1) + u[k]); out[k] = alpha * s * (T(1) - s); }
      break;
    case kAtan: {
      const T c = T(0.5 * M_PI) * alpha;
      for (int64_t k = 0; k < n; ++k) { T u = c * x[k]; out[k] = alpha / (T(2) * (T(1) + u * u)); }
      break;
    }
    case kTanh:
      for (int64_t k = 0; k < n; ++k) u[k] = alpha * x[k];
      vtanh(n, u, u);
      for (int64_t k = 0; k < n; ++k) out[k] = T(0.5) * alpha * (T(1) - u[k] * u[k]);
      break;
    default:
      for (int64_t k = 0; k < n; ++k) out[k] = T(0);
  }
}

// The parameters of one tile, each spread to one value per neuron: the tile loops of whole layers
// keep them in L1 over all steps (the compiler addresses these arrays from the stack pointer; with
// one pointer per parameter the feed-forward AdEx ran 15 % slower).
template <typename T, int K>
struct TileParams {
  T p[K][kTile];
  void load(const T* const* params, const int64_t* vector, int64_t n0, int64_t n) {
    for (int j = 0; j < K; ++j) {
      if (vector[j]) std::memcpy(p[j], params[j] + n0, n * sizeof(T));
      else std::fill(p[j], p[j] + n, params[j][0]);
    }
  }
};

// The parameters of a one-step call (the recurrent loops call one per step), read in place: a
// per-neuron parameter's own values, a single value spread over kTile values once per call
// (copying every parameter into every tile cost as much as the step itself).
template <typename T, int K>
struct ParamTiles {
  T spread[K][kTile];
  const T* const* params;
  const int64_t* vector;
  ParamTiles(const T* const* params, const int64_t* vector, bool one_step) : params(params), vector(vector) {
    if (one_step)
      for (int j = 0; j < K; ++j)
        if (!vector[j]) std::fill(spread[j], spread[j] + kTile, params[j][0]);
  }
  // Parameter j of the tile from neuron n0: in place for one step, else the tile's copy.
  template <bool OneStep>
  SNN_INLINE const T* at(int j, int64_t n0, const TileParams<T, K>& copy) const {
    if (OneStep) return vector[j] ? params[j] + n0 : spread[j];
    return copy.p[j];
  }
};

// Runs body(std::true_type()) for one step, else body(std::false_type()): the tile loops are
// compiled twice, on the state in place for the recurrent loops' one-step calls (copies in and
// out would cost as much as the step), and on copies kept in L1 over the steps of whole layers.
template <typename F>
SNN_INLINE void for_steps(bool one_step, F body) {
  if (one_step) body(std::true_type());
  else body(std::false_type());
}

// A tile's rows of a state array over a call: for one step (the recurrent loops) the array itself,
// else a copy that stays in L1 over the steps (copied back by rows_back).
template <typename T>
SNN_INLINE T* rows_in(T* state, T* local, int64_t n, bool in_place) {
  if (in_place) return state;
  std::memcpy(local, state, n * sizeof(T));
  return local;
}
template <typename T>
SNN_INLINE void rows_back(T* state, const T* rows, int64_t n) {
  if (rows != state) std::memcpy(state, rows, n * sizeof(T));
}

// Runs body(n0, n) over the tiles of M neurons; every tile is independent of the others.
// MKL's vector functions open an OpenMP region of their own on every call; nested inside ours it
// costs more than the exponential of a tile and serialises the threads. Each of our threads
// therefore asks MKL for one thread while it runs tiles, and gives
// the setting back afterwards (MKL_Set_Num_Threads_Local(0) would drop a caller's own setting).
template <typename F>
void for_each_tile(int64_t M, int threads, F body) {
  const int64_t tiles = (M + kTile - 1) / kTile;
  if (threads == 1) {  // no OpenMP region: its start and end cost more than a small step's work
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t n0 = tile * kTile;
      body(n0, std::min(kTile, M - n0));
    }
#if defined(SNN_X86)
    _mm_sfence();
#endif
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int mkl_threads = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t n0 = tile * kTile;
      body(n0, std::min(kTile, M - n0));
    }
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(mkl_threads);
#if defined(SNN_X86)
    _mm_sfence();  // store_row's non-temporal stores are visible before the results are read
#endif
  }
}

// Runs body(one, n0, n, param) over the tiles of M neurons, param(j) pointing at parameter j's
// values for the tile and one std::true_type for a one-step call (the recurrent loops', on the
// state in place: see for_steps), else std::false_type. A one-step call reads the parameters in
// place (ParamTiles), a whole layer's tiles keep copies in L1 over the steps (TileParams).
template <typename T, int K, typename F>
void for_each_parameter_tile(int64_t M, int threads, const T* const* params, const int64_t* vector, bool one_step,
                             F body) {
  const ParamTiles<T, K> spread(params, vector, one_step);
  for_steps(one_step, [&](auto one) {
    constexpr bool OneStep = decltype(one)::value;
    for_each_tile(M, threads, [&](int64_t n0, int64_t n) {
      TileParams<T, K> copy;
      if (!OneStep) copy.load(params, vector, n0, n);
      body(one, n0, n, [&](int j) { return spread.template at<OneStep>(j, n0, copy); });
    });
  });
}

// ---------------------------------------------------------------- AdEx
// params: c_mem = dt*tau_mem_inv, c_syn = -dt*tau_syn_inv, c_ada = dt*tau_ada_inv,
//         adaptation_current, adaptation_spike, delta_T, v_leak, v_th, v_reset
enum { A_CMEM, A_CSYN, A_CADA, A_AC, A_AS, A_DT, A_VL, A_VTH, A_VR, A_COUNT };

// Symplectic: the adaptation is driven by the voltage after the step's reset (the symplectic
// integrator), else by the voltage entering the step (euler); see lif_adex_feed_forward_step.
template <typename T, bool Symplectic>
void adex_forward(int64_t steps, int64_t M, const T* x, int64_t x_ts, int64_t x_ns, T* v, T* i, T* a, const T* const* params,
                  const int64_t* vector, T* z, T* vd_saved, T* ij_saved, T* a_saved, int threads) {
  const bool stream_z = t_stream_rows, one_step = steps == 1;
  for_each_parameter_tile<T, A_COUNT>(M, threads, params, vector, one_step, [&](auto one, int64_t n0, int64_t n, auto param) {
    constexpr bool OneStep = decltype(one)::value;
    constexpr T exp_max = T(kExpMax);
    const T *c_mem = param(A_CMEM), *c_syn = param(A_CSYN), *c_ada = param(A_CADA),
            *ac = param(A_AC), *as = param(A_AS), *dT = param(A_DT), *vl = param(A_VL),
            *vth = param(A_VTH), *vr = param(A_VR);
    T v_tile[kTile], i_tile[kTile], a_tile[kTile], e[kTile], ex[kTile], xb[kTile], z_tile[kTile], ijs[kTile];
    T* vv = rows_in(v + n0, v_tile, n, OneStep);
    T* ii = rows_in(i + n0, i_tile, n, OneStep);
    T* aa = rows_in(a + n0, a_tile, n, OneStep);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t off = t * M + n0;
      prefetch_row(x, t + kAhead, steps, x_ts, x_ns, n0, n);
      const T* xt = row(x, t, x_ts, x_ns, n0, n, xb);
      for (int64_t k = 0; k < n; ++k) e[k] = std::min((vv[k] - vth[k]) / dT[k], exp_max);
      vexp(n, e, ex);
      if (ij_saved) {
        for (int64_t k = 0; k < n; ++k) ijs[k] = ii[k] + xt[k];
        store_row(ij_saved + off, ijs, n);
        store_row(a_saved + off, aa, n);
      }
      // One step of a recurrent loop (which reads the step's spikes at once): straight into z.
      const bool direct = OneStep && !stream_z;
      T* zt = direct ? z + off : z_tile;
#pragma GCC ivdep
      for (int64_t k = 0; k < n; ++k) {
        const T ij = ii[k] + xt[k];
        const T vd = vv[k] + c_mem[k] * ((((vl[k] - vv[k]) + dT[k] * ex[k]) + ij) - aa[k]);
        const T inew = ij + c_syn[k] * ij;
        const T zz = spike(vd, vth[k]);
        zt[k] = zz;
        const T vnew = after_reset(vd, zz, vr[k]);
        const T u = Symplectic ? vnew : vv[k];  // the voltage driving the adaptation
        const T ad = aa[k] + c_ada[k] * (ac[k] * (u - vl[k]) - aa[k]);
        vv[k] = vnew;
        ii[k] = inew;
        aa[k] = ad + zz * as[k];
        e[k] = vd;
      }
      if (!direct) store_row(z + off, zt, n);
      if (vd_saved) store_row(vd_saved + off, e, n);
    }
    rows_back(v + n0, vv, n);
    rows_back(i + n0, ii, n);
    rows_back(a + n0, aa, n);
  });
}

// gv, gi, ga: in, the gradients of the state after step steps - 1; out, those of the state
// entering step t_stop (the backward runs steps steps - 1 down to t_stop: 0 for a whole layer,
// one step at a time for a recurrent one, whose g_z of a step needs the later steps' g_x).
// With Params, the per-neuron parameter gradients of these steps are added to gparams
// ([A_COUNT][M], zeros for a whole layer); ij_saved and a_saved hold i + x and a before each step.
// Symplectic as in adex_forward.
template <typename T, bool Params, bool Symplectic>
void adex_backward(int64_t steps, int64_t t_stop, int64_t M, const T* gz, int64_t gz_ts, int64_t gz_ns, T* gv, T* gi, T* ga,
                   const T* vd_saved,
                   const T* v0, const T* ij_saved, const T* a_saved, const T* const* params,
                   const int64_t* vector, int method, double alpha, T* gx, T* gparams, int threads) {
  const bool stream_gx = t_stream_rows, one_step = steps - t_stop == 1;
  for_each_parameter_tile<T, A_COUNT>(M, threads, params, vector, one_step, [&](auto one, int64_t n0, int64_t n, auto param) {
    constexpr bool OneStep = decltype(one)::value;
    constexpr T exp_max = T(kExpMax);
    const T *c_mem = param(A_CMEM), *c_syn = param(A_CSYN), *c_ada = param(A_CADA),
            *ac = param(A_AC), *as = param(A_AS), *dT = param(A_DT), *vl = param(A_VL),
            *vth = param(A_VTH), *vr = param(A_VR);
    T gv_tile[kTile], gi_tile[kTile], ga_tile[kTile], vv[kTile], exp_arg[kTile], ex[kTile], xs[kTile],
        sg[kTile], gb[kTile], gx_tile[kTile];
    T* gvv = rows_in(gv + n0, gv_tile, n, OneStep);
    T* gii = rows_in(gi + n0, gi_tile, n, OneStep);
    T* gaa = rows_in(ga + n0, ga_tile, n, OneStep);
    // The per-neuron parameter gradients, named as in python/feed_forward.py's adex_backward_step.
    T G_tile[Params ? A_COUNT : 1][kTile];
    T* G[Params ? A_COUNT : 1] = {};
    if (Params) for (int j = 0; j < A_COUNT; ++j) G[j] = rows_in(gparams + j * M + n0, G_tile[j], n, OneStep);
    T *g_c_mem = G[0], *g_c_syn = G[Params ? A_CSYN : 0], *g_c_ada = G[Params ? A_CADA : 0],
      *g_ac = G[Params ? A_AC : 0], *g_a_spike = G[Params ? A_AS : 0],
      *g_delta_T = G[Params ? A_DT : 0], *g_v_leak = G[Params ? A_VL : 0],
      *g_v_th = G[Params ? A_VTH : 0], *g_v_reset = G[Params ? A_VR : 0];
    for (int64_t t = steps - 1; t >= t_stop; --t) {
      const int64_t off = t * M + n0;
      prefetch_row(vd_saved, t - 1 - kAhead, steps, M, 1, n0, n);  // this step reads rows t and t - 1
      prefetch_row(gz, t - kAhead, steps, gz_ts, gz_ns, n0, n);
      if (Params) {
        prefetch_row(ij_saved, t - kAhead, steps, M, 1, n0, n);
        prefetch_row(a_saved, t - kAhead, steps, M, 1, n0, n);
      }
      const T* vdt = vd_saved + off;
      entering_voltage(vd_saved, v0, t, M, n0, n, vth, vr, vv);
      for (int64_t k = 0; k < n; ++k) {
        const T q = (vv[k] - vth[k]) / dT[k];
        exp_arg[k] = q;
        xs[k] = exp_max < q ? exp_max : q;  // std::min(q, exp_max), NaN kept
      }
      vexp(n, xs, ex);
      for (int64_t k = 0; k < n; ++k) xs[k] = vdt[k] - vth[k];
      surrogate<T>(method, T(alpha), xs, sg, n);
      const T* gzt = gz ? row(gz, t, gz_ts, gz_ns, n0, n, gb) : nullptr;
      const T* ijt = Params ? ij_saved + off : nullptr;
      const T* at = Params ? a_saved + off : nullptr;
      const bool direct = OneStep && !stream_gx;  // as the forward's spikes
      T* gxt = direct ? gx + off : gx_tile;
#pragma GCC ivdep
      for (int64_t k = 0; k < n; ++k) {
        const T zz = xs[k] > T(0) ? T(1) : T(0);
        const T gv = gvv[k], gi = gii[k], ga = gaa[k];
        const T g_ada_drive = ga * c_ada[k];
        // The gradient of the voltage after the step: with Symplectic the adaptation's drive reads it.
        const T g_v_new = Symplectic ? gv + g_ada_drive * ac[k] : gv;
        const T g_z = (gzt ? gzt[k] : T(0)) - g_v_new * vdt[k] + g_v_new * vr[k] + ga * as[k];
        const T g_xs = g_z * sg[k];
        const T g_vd = g_v_new * (T(1) - zz) + g_xs;
        const T g_drive = g_vd * c_mem[k];
        const T g_exp_arg = exp_arg[k] < exp_max ? g_drive * dT[k] * ex[k] : T(0);
        const T g_v_exp = g_exp_arg / dT[k];
        const T g_ij = input_gradient(g_drive, gi, c_syn[k]);
        gvv[k] = Symplectic ? g_vd - g_drive + g_v_exp : g_vd - g_drive + g_v_exp + g_ada_drive * ac[k];
        gaa[k] = ga - g_drive - g_ada_drive;
        gii[k] = g_ij;
        gxt[k] = g_ij;
        if (Params) {
          const T v = vv[k], ij = ijt[k], a = at[k];
          const T u = Symplectic ? after_reset(vdt[k], zz, vr[k]) : v;  // the voltage driving the adaptation
          g_c_mem[k] += g_vd * ((((vl[k] - v) + dT[k] * ex[k]) + ij) - a);
          g_c_syn[k] += gi * ij;
          g_c_ada[k] += ga * (ac[k] * (u - vl[k]) - a);
          g_ac[k] += g_ada_drive * (u - vl[k]);
          g_a_spike[k] += ga * zz;
          g_delta_T[k] += g_drive * ex[k] - g_exp_arg * exp_arg[k] / dT[k];
          g_v_leak[k] += g_drive - g_ada_drive * ac[k];
          g_v_th[k] += -g_xs - g_v_exp;
          g_v_reset[k] += g_v_new * zz;
        }
      }
      if (!direct) store_row(gx + off, gxt, n);
    }
    rows_back(gv + n0, gvv, n);
    rows_back(gi + n0, gii, n);
    rows_back(ga + n0, gaa, n);
    if (Params) for (int j = 0; j < A_COUNT; ++j) rows_back(gparams + j * M + n0, G[j], n);
  });
}

// ---------------------------------------------------------------- LIF (and LI's forward)
// params: c_mem = dt*tau_mem_inv, c_syn = -dt*tau_syn_inv, v_leak, v_th, v_reset
enum { L_CMEM, L_CSYN, L_VL, L_VTH, L_VR, L_COUNT };
// LI params: c_mem, c_syn, v_leak (LIF's first three).
enum { I_CMEM, I_CSYN, I_VL, I_COUNT };

// LIF (Spiking: outputs z, saves v_d, resets) and LI (outputs v after each step) share the
// leaky synapse and membrane, hence this one tile loop. LI's parameters are LIF's first three.
template <typename T, bool Spiking>
void leaky_forward(int64_t steps, int64_t M, const T* x, int64_t x_ts, int64_t x_ns, T* v, T* i, const T* const* params,
                   const int64_t* vector, T* out, T* vd_saved, T* ij_saved, int threads) {
  const bool stream_z = t_stream_rows, one_step = steps == 1;
  constexpr int K = Spiking ? L_COUNT : I_COUNT;  // LI's parameters are LIF's first three
  for_each_parameter_tile<T, K>(M, threads, params, vector, one_step, [&](auto one, int64_t n0, int64_t n, auto param) {
    constexpr bool OneStep = decltype(one)::value;
    const T *c_mem = param(L_CMEM), *c_syn = param(L_CSYN), *vl = param(L_VL);
    const T *vth = param(Spiking ? L_VTH : 0), *vr = param(Spiking ? L_VR : 0);  // read when Spiking
    T v_tile[kTile], i_tile[kTile], vds[kTile], xb[kTile], z_tile[kTile], ijs[kTile];
    T* vv = rows_in(v + n0, v_tile, n, OneStep);
    T* ii = rows_in(i + n0, i_tile, n, OneStep);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t off = t * M + n0;
      prefetch_row(x, t + kAhead, steps, x_ts, x_ns, n0, n);
      const T* xt = row(x, t, x_ts, x_ns, n0, n, xb);
      if (ij_saved) {
        for (int64_t k = 0; k < n; ++k) ijs[k] = ii[k] + xt[k];
        store_row(ij_saved + off, ijs, n);
      }
      // One step of a recurrent loop (which reads the step's spikes at once): straight into out.
      const bool direct = Spiking && OneStep && !stream_z;
      T* zt = direct ? out + off : z_tile;
#pragma GCC ivdep
      for (int64_t k = 0; k < n; ++k) {
        const T ij = ii[k] + xt[k];
        const T vd = leaky_membrane(vv[k], c_mem[k], vl[k], ij);
        ii[k] = ij + c_syn[k] * ij;
        if (Spiking) {
          const T zz = spike(vd, vth[k]);
          vv[k] = after_reset(vd, zz, vr[k]);
          zt[k] = zz;
          vds[k] = vd;
        } else {
          vv[k] = vd;
        }
      }
      if (Spiking) {
        if (!direct) store_row(out + off, zt, n);
        if (vd_saved) store_row(vd_saved + off, vds, n);
      } else {
        store_row(out + off, vv, n);
      }
    }
    rows_back(v + n0, vv, n);
    rows_back(i + n0, ii, n);
  });
}

// As adex_backward: steps steps - 1 down to t_stop, parameter gradients added to gparams.
template <typename T, bool Params>
void lif_backward(int64_t steps, int64_t t_stop, int64_t M, const T* gz, int64_t gz_ts, int64_t gz_ns, T* gv, T* gi, const T* vd_saved, const T* v0,
                  const T* ij_saved, const T* const* params, const int64_t* vector, int method,
                  double alpha, T* gx, T* gparams, int threads) {
  const bool stream_gx = t_stream_rows, one_step = steps - t_stop == 1;
  for_each_parameter_tile<T, L_COUNT>(M, threads, params, vector, one_step, [&](auto one, int64_t n0, int64_t n, auto param) {
    constexpr bool OneStep = decltype(one)::value;
    const T *c_mem = param(L_CMEM), *c_syn = param(L_CSYN), *vl = param(L_VL), *vth = param(L_VTH),
            *vr = param(L_VR);
    T gv_tile[kTile], gi_tile[kTile], xs[kTile], sg[kTile], vv[kTile], gb[kTile], gx_tile[kTile];
    T* gvv = rows_in(gv + n0, gv_tile, n, OneStep);
    T* gii = rows_in(gi + n0, gi_tile, n, OneStep);
    T G_tile[Params ? L_COUNT : 1][kTile];
    T* G[Params ? L_COUNT : 1] = {};  // named as in python/feed_forward.py's lif_backward_step:
    if (Params) for (int j = 0; j < L_COUNT; ++j) G[j] = rows_in(gparams + j * M + n0, G_tile[j], n, OneStep);
    T *g_c_mem = G[0], *g_c_syn = G[Params ? L_CSYN : 0], *g_v_leak = G[Params ? L_VL : 0],
      *g_v_th = G[Params ? L_VTH : 0], *g_v_reset = G[Params ? L_VR : 0];
    for (int64_t t = steps - 1; t >= t_stop; --t) {
      const int64_t off = t * M + n0;
      prefetch_row(vd_saved, t - kAhead - (Params ? 1 : 0), steps, M, 1, n0, n);
      prefetch_row(gz, t - kAhead, steps, gz_ts, gz_ns, n0, n);
      if (Params) prefetch_row(ij_saved, t - kAhead, steps, M, 1, n0, n);
      const T* vdt = vd_saved + off;
      for (int64_t k = 0; k < n; ++k) xs[k] = vdt[k] - vth[k];
      surrogate<T>(method, T(alpha), xs, sg, n);
      if (Params) entering_voltage(vd_saved, v0, t, M, n0, n, vth, vr, vv);
      const T* gzt = gz ? row(gz, t, gz_ts, gz_ns, n0, n, gb) : nullptr;
      const T* ijt = Params ? ij_saved + off : nullptr;
      const bool direct = OneStep && !stream_gx;  // as the forward's spikes
      T* gxt = direct ? gx + off : gx_tile;
#pragma GCC ivdep
      for (int64_t k = 0; k < n; ++k) {
        const T zz = xs[k] > T(0) ? T(1) : T(0);
        const T gv = gvv[k], gi = gii[k];
        const T g_z = (gzt ? gzt[k] : T(0)) - gv * vdt[k] + gv * vr[k];
        const T g_xs = g_z * sg[k];
        const T g_vd = gv * (T(1) - zz) + g_xs;
        const T g_drive = g_vd * c_mem[k];
        const T g_ij = input_gradient(g_drive, gi, c_syn[k]);
        gvv[k] = g_vd - g_drive;
        gii[k] = g_ij;
        gxt[k] = g_ij;
        if (Params) {
          g_c_mem[k] += g_vd * ((vl[k] - vv[k]) + ijt[k]);
          g_c_syn[k] += gi * ijt[k];
          g_v_leak[k] += g_drive;
          g_v_th[k] += -g_xs;
          g_v_reset[k] += gv * zz;
        }
      }
      if (!direct) store_row(gx + off, gxt, n);
    }
    rows_back(gv + n0, gvv, n);
    rows_back(gi + n0, gii, n);
    if (Params) for (int j = 0; j < L_COUNT; ++j) rows_back(gparams + j * M + n0, G[j], n);
  });
}

// ---------------------------------------------------------------- LI (forward: leaky_forward)
// params: c_mem = dt*tau_mem_inv, c_syn = -dt*tau_syn_inv, v_leak. Output: v after each step.

// out_saved (with Params): the forward's outputs, i.e. v after each step.
template <typename T, bool Params>
void li_backward(int64_t steps, int64_t M, const T* gout, int64_t gz_ts, int64_t gz_ns, T* gv, T* gi, const T* out_saved, const T* v0,
                 const T* ij_saved, const T* const* params, const int64_t* vector, T* gx, T* gparams,
                 int threads) {
  for_each_tile(M, threads, [&](int64_t n0, int64_t n) {
    TileParams<T, I_COUNT> P;
    P.load(params, vector, n0, n);
    const T *c_mem = P.p[I_CMEM], *c_syn = P.p[I_CSYN], *vl = P.p[I_VL];
    T gvv[kTile], gii[kTile], gb[kTile];
    T G[Params ? I_COUNT : 1][kTile];  // named as in python/feed_forward.py's li_backward_step:
    T *g_c_mem = G[0], *g_c_syn = G[Params ? I_CSYN : 0], *g_v_leak = G[Params ? I_VL : 0];
    std::memcpy(gvv, gv + n0, n * sizeof(T));
    std::memcpy(gii, gi + n0, n * sizeof(T));
    if (Params) for (int j = 0; j < I_COUNT; ++j) std::fill(G[j], G[j] + n, T(0));
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t off = t * M + n0;
      prefetch_row(gout, t - kAhead, steps, gz_ts, gz_ns, n0, n);
      if (Params) {
        prefetch_row(out_saved, t - 1 - kAhead, steps, M, 1, n0, n);
        prefetch_row(ij_saved, t - kAhead, steps, M, 1, n0, n);
      }
      const T* got = gout ? row(gout, t, gz_ts, gz_ns, n0, n, gb) : nullptr;
      const T* vprev = Params ? (t > 0 ? out_saved + off - M : v0 + n0) : nullptr;
      const T* ijt = Params ? ij_saved + off : nullptr;
      T gxt[kTile];
      for (int64_t k = 0; k < n; ++k) {
        const T gv = gvv[k] + (got ? got[k] : T(0));
        const T gi = gii[k];
        const T g_drive = gv * c_mem[k];
        const T g_ij = input_gradient(g_drive, gi, c_syn[k]);
        gvv[k] = gv - g_drive;
        gii[k] = g_ij;
        gxt[k] = g_ij;
        if (Params) {
          g_c_mem[k] += gv * ((vl[k] - vprev[k]) + ijt[k]);
          g_c_syn[k] += gi * ijt[k];
          g_v_leak[k] += g_drive;
        }
      }
      store_row(gx + off, gxt, n, t_stream_rows);
    }
    std::memcpy(gv + n0, gvv, n * sizeof(T));
    std::memcpy(gi + n0, gii, n * sizeof(T));
    if (Params) for (int j = 0; j < I_COUNT; ++j) std::memcpy(gparams + j * M + n0, G[j], n * sizeof(T));
  });
}


// ---------------------------------------------------------------- native recurrent loops
// The whole forward and the whole backward of a recurrent AdEx or LIF population in one call:
// each step's products go through BLAS's GEMM with the arguments torch's mm passes for the eager
// step's operands (a "plan" of 9 values computed by cpp/recurrent.py's gemm_plan: transa, transb,
// m, n, k, lda, ldb, ldc, and whether torch swaps its two operands), into 64-byte aligned buffers
// as torch's fresh tensors are: BLAS's rounding can depend on where rows start. With one thread the
// results are bit-identical to the step loop; with several, BLAS may split the sums differently.
enum { G_TA, G_TB, G_M, G_N, G_K, G_LDA, G_LDB, G_LDC, G_SWAP, G_COUNT };

inline void gemm_call(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* a,
                      const int* lda, const float* b, const int* ldb, float* c, const int* ldc) {
  const float one = 1.0f, zero = 0.0f;
  sgemm_(ta, tb, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc);
}
inline void gemm_call(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* a,
                      const int* lda, const double* b, const int* ldb, double* c, const int* ldc) {
  const double one = 1.0, zero = 0.0;
  dgemm_(ta, tb, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc);
}


// ---------------------------------------------------------------- spike-sparse products
// The recurrent products multiply binary spike vectors: at the recipes' rates (~10 % ones) a dense
// GEMM spends most of its work on zeros. These helpers compute them over the active neurons only.
// Their sums run in a fixed order (ascending neuron forward, ascending (t, b) for the weight
// gradient), independent of the thread count, but not BLAS's order: they equal the dense products
// within rounding (recurrent.py's docstring gives the bound), not bit for bit.

// The indices of the nonzero values of each of the B rows of a [B, N] array, row after row, into
// idx (M values of room), with start[b] .. start[b + 1] those of row b (B + 1 values); returns
// their count. Vector compares and a walk over the set bits: a few instructions per 16 values.
template <typename T>
int64_t active_lists(const T* z, int64_t B, int64_t N, int32_t* idx, int64_t* start) {
  int64_t c = 0;
  for (int64_t b = 0; b < B; ++b) {
    start[b] = c;
    const T* zb = z + b * N;
    int64_t m = 0;
#if defined(SNN_X86) && defined(__AVX512F__) && defined(__AVX512VL__)
    // Compress-stores of the indices of a mask's set lanes: no branch per spike.
    constexpr int64_t per = 64 / sizeof(T);
    __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(int(per));
    for (; m + per <= N; m += per) {
      if constexpr (sizeof(T) == 4) {
        const __mmask16 mask = _mm512_cmp_ps_mask(_mm512_loadu_ps(reinterpret_cast<const float*>(zb + m)), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_mask_compressstoreu_epi32(idx + c, mask, lanes);
        c += __builtin_popcount(unsigned(mask));
      } else {
        const __mmask8 mask = _mm512_cmp_pd_mask(_mm512_loadu_pd(reinterpret_cast<const double*>(zb + m)), _mm512_setzero_pd(), _CMP_NEQ_UQ);
        _mm256_mask_compressstoreu_epi32(idx + c, mask, _mm512_castsi512_si256(lanes));
        c += __builtin_popcount(unsigned(mask));
      }
      lanes = _mm512_add_epi32(lanes, step);
    }
#elif defined(SNN_X86) && defined(__AVX__)
    constexpr int64_t per = 32 / sizeof(T);
    for (; m + per <= N; m += per) {
      unsigned mask;
      if constexpr (sizeof(T) == 4) mask = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(reinterpret_cast<const float*>(zb + m)), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
      else mask = unsigned(_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(reinterpret_cast<const double*>(zb + m)), _mm256_setzero_pd(), _CMP_NEQ_UQ)));
      while (mask) {
        idx[c++] = int32_t(m + __builtin_ctz(mask));
        mask &= mask - 1;
      }
    }
#endif
    for (; m < N; ++m) {  // the rest, branch-free
      idx[c] = int32_t(m);
      c += zb[m] != T(0);
    }
  }
  start[B] = c;
  return c;
}

// acc[n] += the rows g[r * N + n] of the listed rows r, for n0 <= n < n1, in the list's order:
// (((acc + g_a) + g_b) + g_c) ... Four rows per pass over acc, each added in turn (the same
// roundings as one at a time), so acc is loaded and stored once per four rows.
template <typename T>
void add_rows(T* __restrict acc, const T* __restrict g, int64_t N, const int32_t* rows, int64_t count, int64_t n0,
              int64_t n1) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    const T* __restrict r0 = g + int64_t(rows[j]) * N;
    const T* __restrict r1 = g + int64_t(rows[j + 1]) * N;
    const T* __restrict r2 = g + int64_t(rows[j + 2]) * N;
    const T* __restrict r3 = g + int64_t(rows[j + 3]) * N;
    for (int64_t n = n0; n < n1; ++n) acc[n] = (((acc[n] + r0[n]) + r1[n]) + r2[n]) + r3[n];
  }
  for (; j < count; ++j) {
    const T* __restrict r0 = g + int64_t(rows[j]) * N;
    for (int64_t n = n0; n < n1; ++n) acc[n] = acc[n] + r0[n];
  }
}

// c[n] = sum over the listed rows r of rows[r * N + n], in the list's order, starting from +0.
template <typename T>
void gather_rows(const T* rows, int64_t N, const int32_t* idx, int64_t count, T* c) {
  std::fill(c, c + N, T(0));
  add_rows(c, rows, N, idx, count, 0, N);
}

// c += a^T b for row-major a [k, m] and b [k, n] into row-major c [m, n] (BLAS's GEMM, beta 1).
inline void gemm_accumulate_at_b(int m, int n, int k, const float* a, const float* b, float* c) {
  const float one = 1.0f;
  sgemm_("n", "t", &n, &m, &k, &one, b, &n, a, &m, &one, c, &n);
}
inline void gemm_accumulate_at_b(int m, int n, int k, const double* a, const double* b, double* c) {
  const double one = 1.0;
  dgemm_("n", "t", &n, &m, &k, &one, b, &n, a, &m, &one, c, &n);
}

// c = m1 @ m2 as torch's mm(m1, m2) computes it (beta 0, alpha 1), by its plan.
template <typename T>
void torch_mm(const int64_t* plan, const T* m1, const T* m2, T* c) {
  const char ta = plan[G_TA] ? 't' : 'n', tb = plan[G_TB] ? 't' : 'n';
  const int m = int(plan[G_M]), n = int(plan[G_N]), k = int(plan[G_K]);
  const int lda = int(plan[G_LDA]), ldb = int(plan[G_LDB]), ldc = int(plan[G_LDC]);
  const T* a = plan[G_SWAP] ? m2 : m1;
  const T* b = plan[G_SWAP] ? m1 : m2;
  gemm_call(&ta, &tb, &m, &n, &k, a, &lda, b, &ldb, c, &ldc);
}

// Neurons of a step from which its neuron update runs on the loops' threads. One step of the
// update is microseconds of work; an OpenMP region around it costs as much on an idle machine, and
// on a shared one every region can wait a scheduler time slice for a descheduled thread, thousands
// of times per call. The products keep BLAS's own threading.
constexpr int64_t kParallelStepNeurons = int64_t(1) << 17;

// Threads for a kernel step over M neurons: one below kParallelStepNeurons, else no more than it has tiles.
inline int step_kernel_threads(int64_t M, int threads) {
  if (M < kParallelStepNeurons) return 1;
  const int64_t tiles = (M + kTile - 1) / kTile;
  return int(std::max<int64_t>(1, std::min<int64_t>(threads, tiles)));
}

// Forward: step t computes c = x[t] W_in^T + z[t-1] W_rec^T (two products and their sum, as
// recurrent_current's torch.add(F.linear(...), F.linear(...))) into cin, then the neuron kernel of
// one step writes row t of z, v_d and the extras. Step 0 multiplies z0 (in its layout, by plan_z0),
// later dense ones a copy of z[t-1] in zbuf (aligned memory, as torch's fresh z would be);
// xbuf (if not null) x[t]'s x_numel values, for a GEMM that torch hands a fresh copy of x[t].
// k1_x_bs >= 0: one input feature, x[t, b] at b * k1_x_bs, w_in[n] at n * k1_w_ns, k1_batch rows.
template <typename T>
void recurrent_forward(int kind, int integrator, int64_t steps, int64_t M, const T* x, int64_t x_ts, T* xbuf,
                       int64_t x_numel, int64_t k1_batch, int64_t k1_x_bs, int64_t k1_w_ns, const T* w_in, const T* w_rec, const int64_t* plan_in, const int64_t* plan_rec,
                       const T* z0, const int64_t* plan_z0, T* zbuf, T* cin, T* crec,
                       T* v, T* i, T* a, const T* const* p, const int64_t* vec, T* z, T* vd, T* ij, T* as,
                       const T* w_rows, double sparse_max_rate, int64_t* stats, int threads) {
  const int kt = step_kernel_threads(M, threads);
  const bool stream = t_stream_rows;
  t_stream_rows = false;
  const int64_t B = k1_batch, N = k1_batch > 0 ? M / k1_batch : 0;  // k1_batch: B (the Python side passes it always)
  std::vector<int32_t> idx(w_rows ? M : 0);
  std::vector<int64_t> start(w_rows ? B + 1 : 0);
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t off = t * M;
    const T* xt = x + t * x_ts;
    if (xbuf) {  // torch multiplies a fresh copy of x[t] here
      std::memcpy(xbuf, xt, x_numel * sizeof(T));
      xt = xbuf;
    }
    bool sparse = false;
    if (t > 0 && w_rows) {  // z[t-1] is the kernel's: every value 0 or 1
      const int64_t active = active_lists(z + off - M, B, N, idx.data(), start.data());
      stats[1] += active;
      stats[2] += 1;
      sparse = double(active) <= sparse_max_rate * double(M);
    }
    if (sparse) {
      stats[0] += 1;
      const int sample_threads = int(std::min<int64_t>(kt, B));
#pragma omp parallel for num_threads(sample_threads) schedule(static) if (sample_threads > 1)
      for (int64_t b = 0; b < B; ++b)
        gather_rows(w_rows, N, idx.data() + start[b], start[b + 1] - start[b], crec + b * N);
    } else if (t == 0) {
      torch_mm(plan_z0, z0, w_rec, crec);
    } else {  // GEMM reads z[t-1] where torch's fresh z would lie: BLAS's rounding can depend on it
      std::memcpy(zbuf, z + off - M, M * sizeof(T));
      torch_mm(plan_rec, zbuf, w_rec, crec);
    }
    if (k1_x_bs >= 0) {
      // One input feature: GEMM's product is one rounded multiplication, x[t, b] w_in[n], whatever
      // BLAS it is, so it is computed here, added as torch.add adds it.
      const int64_t N = M / k1_batch;
      for (int64_t b = 0; b < k1_batch; ++b) {
        const T xb = xt[b * k1_x_bs];
        T* c = cin + b * N;
        const T* r = crec + b * N;
        for (int64_t n = 0; n < N; ++n) c[n] = xb * w_in[n * k1_w_ns] + r[n];
      }
    } else {
      torch_mm(plan_in, xt, w_in, cin);
      for (int64_t k = 0; k < M; ++k) cin[k] = cin[k] + crec[k];
    }
    T* vdt = vd ? vd + off : nullptr;
    T* ijt = ij ? ij + off : nullptr;
    if (kind == 0) {
      T* ast = as ? as + off : nullptr;
      if (integrator) adex_forward<T, true>(1, M, cin, 0, 1, v, i, a, p, vec, z + off, vdt, ijt, ast, kt);
      else adex_forward<T, false>(1, M, cin, 0, 1, v, i, a, p, vec, z + off, vdt, ijt, ast, kt);
    } else {
      leaky_forward<T, true>(1, M, cin, 0, 1, v, i, p, vec, z + off, vdt, ijt, kt);
    }
  }
  t_stream_rows = stream;
}

// The recurrent weight gradient, transposed: gwt[m, n] += sum over steps t and samples b of
// z_{t-1}[b, m] g_c[t, b, n] (gwt = dL/dW_rec^T, [N, N], zeroed by the caller), one step at a time in
// reverse time: inside the backward loop (recurrent_backward), while g_c[t] and the voltages just
// read are in cache, or over a whole g_c (spike_weight_gradient). z_{t-1} is z0 at t = 0 (any values;
// null: all zero), later the spikes of the saved pre-reset voltages, [v_d[t-1] - v_th > 0]. A step
// whose spike rate is at most max_rate is summed over its spikes: the step's (b, m) spike lists are
// sorted by pre-synaptic neuron m (a counting sort, which keeps b ascending), and row m of gwt adds
// the rows g_c[t, b] of its list in that order, four per pass (the same roundings as one at a
// time), its columns split over the threads. A denser step, and t = 0 when z0 is given, is one GEMM
// (gwt += z_{t-1}^T g_c[t]). Every element is thus summed over descending t and, within a sparse
// step, ascending b, whatever the thread count. stats: [0] sparse steps, [1] steps.
template <typename T>
class SpikeWeightGradient {
 public:
  SpikeWeightGradient(int64_t B, int64_t N, const T* vd, const T* z0, const T* vth, bool vth_vector,
                      double max_rate, T* gwt, int64_t* stats, int threads)
      : B_(B), N_(N), vd_(vd), z0_(z0), vth_(vth), vth_vector_(vth_vector), max_rate_(max_rate), gwt_(gwt),
        stats_(stats), threads_(threads), z_(B * N), idx_(B * N), by_neuron_(B * N), start_(B + 1), first_(N + 1),
        pos_(N) {}

  // Adds step t's share, z_{t-1}^T g_c[t], for g_c[t] at gct ([B, N]).
  void add_step(int64_t t, const T* gct) {
    const int64_t M = B_ * N_;
    if (t == 0) {
      if (z0_) gemm_accumulate_at_b(int(N_), int(N_), int(B_), z0_, gct, gwt_);
      return;
    }
    const T* vp = vd_ + (t - 1) * M;
    T* z = z_.data();
    if (vth_vector_) for (int64_t k = 0; k < M; ++k) z[k] = spike(vp[k], vth_[k]);
    else for (int64_t k = 0; k < M; ++k) z[k] = spike(vp[k], vth_[0]);
    const int64_t active = active_lists(z, B_, N_, idx_.data(), start_.data());
    stats_[1] += 1;
    if (double(active) > max_rate_ * double(M)) {
      gemm_accumulate_at_b(int(N_), int(N_), int(B_), z, gct, gwt_);
      return;
    }
    stats_[0] += 1;
    // The samples of each pre-synaptic neuron, ascending: a counting sort of the (b, m) spikes.
    std::fill(first_.begin(), first_.end(), 0);
    for (int64_t k = 0; k < active; ++k) first_[idx_[k] + 1] += 1;
    for (int64_t m = 0; m < N_; ++m) first_[m + 1] += first_[m];
    std::copy(first_.begin(), first_.end() - 1, pos_.begin());
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t k = start_[b]; k < start_[b + 1]; ++k) by_neuron_[pos_[idx_[k]]++] = int32_t(b);
    // Columns split over the threads in blocks of 16 values; one block each when N is small.
    const int64_t blocks = (N_ + 15) / 16;
    const int parts = int(std::max<int64_t>(1, std::min<int64_t>(threads_, blocks)));
    const int64_t N = N_;
    const int32_t* rows = by_neuron_.data();
    const int64_t* first = first_.data();
    T* gwt = gwt_;
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
    for (int part = 0; part < parts; ++part) {
      const int64_t n0 = std::min(N, (blocks * part / parts) * 16), n1 = std::min(N, (blocks * (part + 1) / parts) * 16);
      for (int64_t m = 0; m < N; ++m) add_rows(gwt + m * N, gct, N, rows + first[m], first[m + 1] - first[m], n0, n1);
    }
  }

 private:
  int64_t B_, N_;
  const T *vd_, *z0_, *vth_;
  bool vth_vector_;
  double max_rate_;
  T* gwt_;
  int64_t* stats_;
  int threads_;
  std::vector<T> z_;
  std::vector<int32_t> idx_, by_neuron_;
  std::vector<int64_t> start_, first_, pos_;
};

// The weight gradient of a whole g_c [T, B, N] (the per-step loops, which have no fused backward).
template <typename T>
void spike_weight_gradient(int64_t steps, int64_t B, int64_t N, const T* gc, const T* vd, const T* z0, const T* vth,
                           int64_t vth_vector, double sparse_max_rate, T* gwt, int64_t* stats, int threads) {
  SpikeWeightGradient<T> sum(B, N, vd, z0, vth, vth_vector != 0, sparse_max_rate, gwt, stats, threads);
  for (int64_t t = steps - 1; t >= 0; --t) sum.add_step(t, gc + t * B * N);
}

// Backward, reverse time: g_z of step t is gout[t] + g_c[t + 1] W_rec (grec; gz of the final
// spikes first), then one step of the neuron kernel's backward writes row t of g_c, then
// grec = g_c[t] W_rec as torch.mm(g_c[t], W_rec). grec ends as the gradient of z0.
// gwt (if not null): the recurrent weight gradient summed over the spikes step by step
// (SpikeWeightGradient: z0 and the spikes of vd against the parameters' v_th, B samples, steps
// sparse up to wg_max_rate, wg_stats); null: the caller multiplies densely.
template <typename T>
void recurrent_backward(int kind, int integrator, int method, double alpha, int64_t steps, int64_t M,
                        const T* gout, int64_t g_ts, int64_t g_ns, T* grec, T* gstep, T* gv, T* gi, T* ga,
                        const T* vd, const T* v0, const T* ij, const T* as, const T* const* p, const int64_t* vec,
                        const T* w_rec, const int64_t* plan_back, T* gc, T* gp, int64_t B, const T* z0, T* gwt,
                        double wg_max_rate, int64_t* wg_stats, int threads) {
  const int kt = step_kernel_threads(M, threads);
  const bool stream = t_stream_rows;
  t_stream_rows = false;
  const int vth_index = kind == 0 ? A_VTH : L_VTH;
  std::unique_ptr<SpikeWeightGradient<T>> weight_gradient;
  if (gwt)
    weight_gradient = std::make_unique<SpikeWeightGradient<T>>(B, M / B, vd, z0, p[vth_index], vec[vth_index] != 0,
                                                               wg_max_rate, gwt, wg_stats, threads);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* g = grec;
    if (gout) {
      const T* go = gout + t * g_ts;
      if (g_ns) for (int64_t k = 0; k < M; ++k) gstep[k] = go[k] + grec[k];
      else for (int64_t k = 0; k < M; ++k) gstep[k] = go[0] + grec[k];
      g = gstep;
    }
    if (kind == 0) {
      if (gp && integrator) adex_backward<T, true, true>(t + 1, t, M, g, 0, 1, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gc, gp, kt);
      else if (gp) adex_backward<T, true, false>(t + 1, t, M, g, 0, 1, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gc, gp, kt);
      else if (integrator) adex_backward<T, false, true>(t + 1, t, M, g, 0, 1, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gc, gp, kt);
      else adex_backward<T, false, false>(t + 1, t, M, g, 0, 1, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gc, gp, kt);
    } else {
      if (gp) lif_backward<T, true>(t + 1, t, M, g, 0, 1, gv, gi, vd, v0, ij, p, vec, method, alpha, gc, gp, kt);
      else lif_backward<T, false>(t + 1, t, M, g, 0, 1, gv, gi, vd, v0, ij, p, vec, method, alpha, gc, gp, kt);
    }
    torch_mm(plan_back, gc + t * M, w_rec, grec);
    if (weight_gradient) weight_gradient->add_step(t, gc + t * M);
  }
  t_stream_rows = stream;
}


}  // namespace

// ---------------------------------------------------------------- C entry points (ctypes)
// AdEx's integrator: its index in snn.neurons.constants.INTEGRATORS (0 euler, 1 symplectic).
#define SNN_ENTRY_POINTS(T, suffix)                                                                  \
  extern "C" void adex_forward_##suffix(int64_t steps, int64_t M, const T* x, int64_t xts, int64_t xns, T* v, T* i, T* a, \
                                        const T* const* p, const int64_t* vec, int integrator, T* z, \
                                        T* vd, T* ij, T* as, int threads) {                         \
    if (integrator) adex_forward<T, true>(steps, M, x, xts, xns, v, i, a, p, vec, z, vd, ij, as, threads);     \
    else adex_forward<T, false>(steps, M, x, xts, xns, v, i, a, p, vec, z, vd, ij, as, threads);               \
  }                                                                                                  \
  extern "C" void adex_backward_##suffix(int64_t steps, int64_t t_stop, int64_t M, const T* gz, int64_t gts, int64_t gns, T* gv, T* gi, T* ga, \
                                         const T* vd, const T* v0, const T* ij, const T* as,        \
                                         const T* const* p, const int64_t* vec, int integrator,     \
                                         int method, double alpha, T* gx, T* gp, int threads) {     \
    if (gp && integrator) adex_backward<T, true, true>(steps, t_stop, M, gz, gts, gns, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gx, gp, threads); \
    else if (gp) adex_backward<T, true, false>(steps, t_stop, M, gz, gts, gns, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gx, gp, threads); \
    else if (integrator) adex_backward<T, false, true>(steps, t_stop, M, gz, gts, gns, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gx, gp, threads); \
    else adex_backward<T, false, false>(steps, t_stop, M, gz, gts, gns, gv, gi, ga, vd, v0, ij, as, p, vec, method, alpha, gx, gp, threads); \
  }                                                                                                  \
  extern "C" void lif_forward_##suffix(int64_t steps, int64_t M, const T* x, int64_t xts, int64_t xns, T* v, T* i, \
                                       const T* const* p, const int64_t* vec, T* z, T* vd, T* ij,   \
                                       int threads) {                                               \
    leaky_forward<T, true>(steps, M, x, xts, xns, v, i, p, vec, z, vd, ij, threads);                          \
  }                                                                                                  \
  extern "C" void lif_backward_##suffix(int64_t steps, int64_t t_stop, int64_t M, const T* gz, int64_t gts, int64_t gns, T* gv, T* gi, \
                                        const T* vd, const T* v0, const T* ij, const T* const* p,   \
                                        const int64_t* vec, int method, double alpha, T* gx, T* gp, \
                                        int threads) {                                              \
    if (gp) lif_backward<T, true>(steps, t_stop, M, gz, gts, gns, gv, gi, vd, v0, ij, p, vec, method, alpha, gx, gp, threads); \
    else lif_backward<T, false>(steps, t_stop, M, gz, gts, gns, gv, gi, vd, v0, ij, p, vec, method, alpha, gx, gp, threads); \
  }                                                                                                  \
  extern "C" void li_forward_##suffix(int64_t steps, int64_t M, const T* x, int64_t xts, int64_t xns, T* v, T* i, \
                                      const T* const* p, const int64_t* vec, T* out, T* ij,         \
                                      int threads) {                                                \
    leaky_forward<T, false>(steps, M, x, xts, xns, v, i, p, vec, out, nullptr, ij, threads);                  \
  }                                                                                                  \
  extern "C" void li_backward_##suffix(int64_t steps, int64_t M, const T* gout, int64_t gts, int64_t gns, T* gv, T* gi, \
                                       const T* out, const T* v0, const T* ij, const T* const* p,   \
                                       const int64_t* vec, T* gx, T* gp, int threads) {             \
    if (gp) li_backward<T, true>(steps, M, gout, gts, gns, gv, gi, out, v0, ij, p, vec, gx, gp, threads);     \
    else li_backward<T, false>(steps, M, gout, gts, gns, gv, gi, out, v0, ij, p, vec, gx, gp, threads);       \
  }

SNN_ENTRY_POINTS(float, f32)
SNN_ENTRY_POINTS(double, f64)

// The native recurrent loops (kind 0 AdEx, 1 LIF; a, as, ga and integrator unused for LIF).
#define SNN_RECURRENT_ENTRY_POINTS(T, suffix)                                                        \
  extern "C" void recurrent_forward_##suffix(int kind, int integrator, int64_t steps, int64_t M, const T* x,    \
      int64_t x_ts, T* xbuf, int64_t x_numel, int64_t k1_batch, int64_t k1_x_bs, int64_t k1_w_ns, const T* w_in, \
      const T* w_rec, const int64_t* plan_in,                                                        \
      const int64_t* plan_rec, const T* z0, const int64_t* plan_z0, T* zbuf,                               \
      T* cin, T* crec, T* v, T* i, T* a, const T* const* p, const int64_t* vec, T* z, T* vd, T* ij, T* as,      \
      const T* w_rows, double sparse_max_rate, int64_t* stats, int threads) {                        \
    recurrent_forward<T>(kind, integrator, steps, M, x, x_ts, xbuf, x_numel, k1_batch, k1_x_bs, k1_w_ns, w_in,  \
                         w_rec, plan_in, plan_rec, z0,                                               \
                         plan_z0, zbuf, cin, crec,                                                   \
                         v, i, a, p, vec, z, vd, ij, as, w_rows, sparse_max_rate, stats, threads);   \
  }                                                                                                  \
  extern "C" void spike_weight_gradient_##suffix(int64_t steps, int64_t B, int64_t N, const T* gc, const T* vd,  \
      const T* z0, const T* vth, int64_t vth_vector, double sparse_max_rate, T* gwt, int64_t* stats,           \
      int threads) {                                                                                 \
    spike_weight_gradient<T>(steps, B, N, gc, vd, z0, vth, vth_vector, sparse_max_rate, gwt, stats, threads);  \
  }                                                                                                  \
  extern "C" void recurrent_backward_##suffix(int kind, int integrator, int method, double alpha, int64_t steps, \
      int64_t M, const T* gout, int64_t g_ts, int64_t g_ns, T* grec, T* gstep, T* gv, T* gi, T* ga,          \
      const T* vd, const T* v0, const T* ij, const T* as, const T* const* p, const int64_t* vec,             \
      const T* w_rec, const int64_t* plan_back, T* gc, T* gp, int64_t B, const T* z0, T* gwt,        \
      double wg_max_rate, int64_t* wg_stats, int threads) {                                          \
    recurrent_backward<T>(kind, integrator, method, alpha, steps, M, gout, g_ts, g_ns, grec, gstep, gv, gi, ga, \
                          vd, v0, ij, as, p, vec, w_rec, plan_back, gc, gp, B, z0, gwt, wg_max_rate,   \
                          wg_stats, threads);                                                        \
  }

SNN_RECURRENT_ENTRY_POINTS(float, f32)
SNN_RECURRENT_ENTRY_POINTS(double, f64)

// The entry points' version (build.KERNELS_VERSION): a library that answers another is not used.
extern "C" int snn_kernels_version() { return 6; }

// Whether MKL's VML functions resolved: the AdEx exponential and the sigmoid/tanh surrogates need them.
extern "C" int vml_available() { return vmsExp && vmdExp && vmsTanh && vmdTanh ? 1 : 0; }

// Whether BLAS's sgemm_/dgemm_ resolved: the native recurrent loops need them.
extern "C" int blas_available() { return sgemm_ && dgemm_ ? 1 : 0; }

// Asks the kernel to back [p, p + bytes) with transparent huge pages before it is first written:
// one fault per 2 MiB instead of 512 for the large fresh buffers of every call. Only whole
// 2 MiB-aligned pages inside the range are advised; a no-op where madvise is unavailable.
extern "C" void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t(1) << 21;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(huge - 1);
  if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}
