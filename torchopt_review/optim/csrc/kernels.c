/*
 * Single-pass optimizer kernels for torchopt_review (plain C99, no torch headers).
 *
 * Each kernel updates a whole (device, dtype) bucket in one call:
 *   n        number of tensors in the bucket
 *   P[i]     pointer to the i-th parameter's memory (numel N[i], dense)
 *   G[i]     pointer to its gradient (same layout as the parameter)
 *   S[k]     base of the k-th flat state buffer; tensor i's slice starts at
 *            sum(N[0..i-1]) (state buffers are flat, params and grads are not)
 *   h        the per-step scalars, a struct of doubles computed in Python and cast to T here
 *            (as torch's CPU kernels cast their scalar arguments to the op type)
 *   f        the integer flags that select a variant (a struct of int64); they are dispatched
 *            to compile-time constants so every variant's loop vectorizes.
 *   lo, hi   the bucket's elements to update (flat offsets; [0, total) for all of them): a
 *            large bucket is split between threads, each calling the kernel on its own range
 *            (elementwise updates: the same result as one call).
 *
 * The field lists below (<NAME>_SCALARS, <NAME>_FLAGS) are the ones of the Python modules
 * (``Scalars`` / ``Flags`` in optim/<name>.py): the library exports them as a string
 * (``<name>_fields()``) and the loader refuses a library whose lists differ, so Python
 * and C always agree on which double is which.
 *
 * Every kernel starts with the same prologue (TOR_PROLOGUE): weight decay
 * w <- w*decoupled_mult - (w*keras_wd)*keras_lr, with decoupled_mult = 1 - lr*wd (torch's
 * decoupled decay) or keras_wd = wd, keras_lr = lr (Keras's `variable - variable * wd * lr`,
 * same rounding); then g <- grad_sign*g + l2_wd*w (maximize, torch's L2 penalty).
 *
 * All of an update's arithmetic happens in one loop over the elements: each
 * byte of parameter, gradient and state is read once and written once.
 * Compiled with -O2 -ftree-vectorize -fno-math-errno -ffp-contract=off -fopenmp-simd: sqrt
 * vectorizes, and no a*b+c is fused, so results stay close to torch's
 * for-loop kernels.  The file includes itself twice, for float and double.
 */
#ifndef TOR_T
#include <stdint.h>
#include <math.h>

#define TOR_CAT_(a, b) a##b
#define TOR_CAT(a, b) TOR_CAT_(a, b)
#define TOR_INLINE static inline __attribute__((always_inline))
#define TOR_SIMD _Pragma("omp simd")

int torchopt_kernels_abi_version(void) { return 3; }

/* ------------------------------------------------------------------ the named field lists */
#define TOR_PROLOGUE(X) X(l2_wd) X(decoupled_mult) X(grad_sign) X(keras_wd) X(keras_lr)

#define SGD_SCALARS(X) TOR_PROLOGUE(X) X(lr) X(momentum) X(buffer_grad_scale) X(nesterov_momentum) X(grad_scale)
#define SGD_FLAGS(X) X(use_momentum) X(nesterov) X(first)
#define ADAGRAD_SCALARS(X) TOR_PROLOGUE(X) X(clr) X(eps_in) X(eps_out)
#define ADAGRAD_FLAGS(X)
#define RMSPROP_SCALARS(X) TOR_PROLOGUE(X) X(alpha) X(one_minus_alpha) X(c_in) X(c_out) X(momentum) X(eps_in) \
  X(eps_out)
#define RMSPROP_FLAGS(X) X(centered) X(use_momentum) X(lerp_high)
#define ADAM_SCALARS(X) TOR_PROLOGUE(X) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(step_size) \
  X(inv_bc2_sqrt) X(eps)
#define ADAM_FLAGS(X) X(amsgrad) X(lerp_high)
#define NADAM_SCALARS(X) TOR_PROLOGUE(X) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(inv_bc2) X(eps) X(c_g) \
  X(c_m)
#define NADAM_FLAGS(X) X(lerp_high)
#define ADAMAX_SCALARS(X) TOR_PROLOGUE(X) X(one_minus_beta1) X(beta2) X(clr) X(eps_in) X(eps_out)
#define ADAMAX_FLAGS(X) X(lerp_high)

#define TOR_DOUBLE(name) double name;
#define TOR_INT64(name) int64_t name;
#define TOR_NAME(name) #name ","
/* struct <k>_scalars / <k>_flags, and <k>_fields(): "scalar,...,;flag,...," for the loader */
#define TOR_DECLARE(k, SCALARS, FLAGS)                                                      \
  struct k##_scalars { SCALARS(TOR_DOUBLE) };                                               \
  const char *k##_fields(void) { return SCALARS(TOR_NAME) ";" FLAGS(TOR_NAME); }
#define TOR_DECLARE_FLAGS(k, FLAGS) struct k##_flags { FLAGS(TOR_INT64) };

TOR_DECLARE(sgd, SGD_SCALARS, SGD_FLAGS)
TOR_DECLARE_FLAGS(sgd, SGD_FLAGS)
TOR_DECLARE(adagrad, ADAGRAD_SCALARS, ADAGRAD_FLAGS)
TOR_DECLARE(rmsprop, RMSPROP_SCALARS, RMSPROP_FLAGS)
TOR_DECLARE_FLAGS(rmsprop, RMSPROP_FLAGS)
TOR_DECLARE(adam, ADAM_SCALARS, ADAM_FLAGS)
TOR_DECLARE_FLAGS(adam, ADAM_FLAGS)
TOR_DECLARE(nadam, NADAM_SCALARS, NADAM_FLAGS)
TOR_DECLARE_FLAGS(nadam, NADAM_FLAGS)
TOR_DECLARE(adamax, ADAMAX_SCALARS, ADAMAX_FLAGS)
TOR_DECLARE_FLAGS(adamax, ADAMAX_FLAGS)

/* The elements [lo, hi) of a bucket (the whole bucket, or one thread's share of it): for each
 * tensor t that overlaps them, its slice starts at element i0 of the tensor, at o = its offset
 * in the flat state buffers, and has len elements. */
#define TOR_EACH_SLICE(...)                                                                 \
  for (int64_t t = 0, off = 0; t < n; off += N[t], ++t) {                                  \
    const int64_t o = lo > off ? lo : off, e = hi < off + N[t] ? hi : off + N[t];           \
    if (o >= e) continue;                                                                  \
    const int64_t i0 = o - off, len = e - o;                                               \
    __VA_ARGS__                                                                            \
  }

#define TOR_T float
#define TOR_SFX _f32
#define TOR_SQRT sqrtf
#define TOR_FABS fabsf
#include __FILE__
#undef TOR_T
#undef TOR_SFX
#undef TOR_SQRT
#undef TOR_FABS

#define TOR_T double
#define TOR_SFX _f64
#define TOR_SQRT sqrt
#define TOR_FABS fabs
#include __FILE__

#else /* ------------------------- one instantiation per TOR_T ------------------------- */
#define T TOR_T
#define FN(name) TOR_CAT(name, TOR_SFX)
/* max that propagates NaN like torch.maximum */
#define TOR_MAX(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
/* torch.lerp(a, b, w) with the same rounding: a + w*(b-a) for |w| < 0.5, else b - (b-a)*(1-w);
 * hi = (|w| >= 0.5) is a flag decided once on the host and dispatched to a compile-time
 * constant (a run-time select would keep the loop from vectorizing), omw = (T)1 - w */
#define TOR_LERP(a, b, w, omw, hi) ((hi) ? (b) - ((b) - (a)) * (omw) : (a) + (w) * ((b) - (a)))
/* the prologue's scalars, cast to T, as locals wd, dm, gs, kwd, klr */
#define TOR_PROLOGUE_LOCALS(h)                                                              \
  const T wd = (T)(h)->l2_wd, dm = (T)(h)->decoupled_mult, gs = (T)(h)->grad_sign;          \
  const T kwd = (T)(h)->keras_wd, klr = (T)(h)->keras_lr;

/* ---------------------------------------------------------------- SGD
 * b = first ? gsc*g : mu*b + bgs*g;  u = nesterov ? gsc*g + nmu*b : b;  w -= lr*u
 * torch: lr, mu, bgs = 1-dampening, nmu = mu, gsc = 1 (1*g == g: torch's rounding).
 * keras, its velocity v = -s*b kept in torch's units b (s = the lr of the last step):
 * lr = s, mu = mu*s_old/s, bgs = gsc = lr/s, nmu = mu -- torch's coefficients at a constant lr.
 */
TOR_INLINE void FN(sgd_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict b,
                               const T lr, const T mu, const T bgs, const T nmu, const T gsc, const T wd,
                               const T dm, const T kwd, const T klr, const T gs, const int mom, const int nest,
                               const int first) {
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    if (!mom) {
      wi = wi - lr * gi;
    } else {
      T bi = first ? gsc * gi : mu * b[i] + bgs * gi;
      b[i] = bi;
      T ui = nest ? gsc * gi + nmu * bi : bi;
      wi = wi - lr * ui;
    }
    w[i] = wi;
  }
}

#define TOR_SGD_LOOP(MOM, NEST, FIRST)                                                     \
  TOR_EACH_SLICE(FN(sgd_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, MOM ? b + o : b, lr, mu, bgs,   \
                                nmu, gsc, wd, dm, kwd, klr, gs, MOM, NEST, FIRST);)

void FN(sgd)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
             const struct sgd_scalars *h, const struct sgd_flags *f, int64_t lo, int64_t hi) {
  TOR_PROLOGUE_LOCALS(h)
  const T lr = (T)h->lr, mu = (T)h->momentum, bgs = (T)h->buffer_grad_scale;
  const T nmu = (T)h->nesterov_momentum, gsc = (T)h->grad_scale;
  T *b = f->use_momentum ? (T *)S[0] : (T *)0;
  const int code = (int)(f->use_momentum ? 1 + (f->nesterov ? 1 : 0) + (f->first ? 2 : 0) : 0);
  switch (code) {
    case 0: TOR_SGD_LOOP(0, 0, 0) break;
    case 1: TOR_SGD_LOOP(1, 0, 0) break;
    case 2: TOR_SGD_LOOP(1, 1, 0) break;
    case 3: TOR_SGD_LOOP(1, 0, 1) break;
    case 4: TOR_SGD_LOOP(1, 1, 1) break;
  }
}

/* ---------------------------------------------------------------- Adagrad
 * s += g^2;  w -= clr * g / (sqrt(s + eps_in) + eps_out)
 * (torch: eps_in = 0, eps_out = eps; keras: eps_in = eps, eps_out = 0)
 */
TOR_INLINE void FN(adagrad_tensor)(int64_t len, T *restrict w, const T *restrict g,
                                   T *restrict s, const T clr, const T wd, const T dm, const T kwd, const T klr,
                                   const T gs, const T ein, const T eout) {
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T si = s[i] + gi * gi;
    s[i] = si;
    w[i] = wi - clr * (gi / (TOR_SQRT(si + ein) + eout));
  }
}

void FN(adagrad)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
                 const struct adagrad_scalars *h, const int64_t *f, int64_t lo, int64_t hi) {
  (void)f;
  TOR_PROLOGUE_LOCALS(h)
  const T clr = (T)h->clr, ein = (T)h->eps_in, eout = (T)h->eps_out;
  T *s = (T *)S[0];
  TOR_EACH_SLICE(FN(adagrad_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, s + o, clr, wd, dm, kwd, klr, gs,
                                    ein, eout);)
}

/* ---------------------------------------------------------------- RMSprop
 * S: square_avg, grad_avg, momentum_buffer
 * v = a*v + (1-a)*g^2;  centered: gbar = lerp(gbar, g, 1-a), D = v - gbar^2 else D = v
 * inc = c_in * g / (sqrt(D + eps_in) + eps_out)
 * momentum: buf = mu*buf + inc, w -= c_out*buf;  else w -= c_out*inc
 * (torch: c_in = 1, c_out = lr, eps outside; keras: c_in = lr, c_out = 1, eps inside)
 */
TOR_INLINE void FN(rmsprop_tensor)(int64_t len, T *restrict w, const T *restrict g,
                                   T *restrict v, T *restrict ga, T *restrict buf, const T a,
                                   const T oma, const T cin, const T cout, const T mu, const T wd,
                                   const T dm, const T kwd, const T klr, const T gs, const T ein, const T eout,
                                   const int centered, const int mom, const int hi) {
  const T omoma = (T)1 - oma;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T vi = v[i] * a + oma * (gi * gi);
    v[i] = vi;
    T d = vi;
    if (centered) {
      T gai = TOR_LERP(ga[i], gi, oma, omoma, hi);
      ga[i] = gai;
      d = vi - gai * gai;
    }
    T inc = cin * gi / (TOR_SQRT(d + ein) + eout);
    if (mom) {
      T bi = mu * buf[i] + inc;
      buf[i] = bi;
      wi = wi - cout * bi;
    } else {
      wi = wi - cout * inc;
    }
    w[i] = wi;
  }
}

#define TOR_RMS_LOOP(C, M, HI)                                                             \
  TOR_EACH_SLICE(FN(rmsprop_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, v + o, C ? ga + o : ga,     \
                                    M ? buf + o : buf, a, oma, cin, cout, mu, wd, dm, kwd, klr, gs, ein,   \
                                    eout, C, M, HI);)

void FN(rmsprop)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
                 const struct rmsprop_scalars *h, const struct rmsprop_flags *f, int64_t lo, int64_t hi) {
  TOR_PROLOGUE_LOCALS(h)
  const T a = (T)h->alpha, oma = (T)h->one_minus_alpha, cin = (T)h->c_in, cout = (T)h->c_out;
  const T mu = (T)h->momentum, ein = (T)h->eps_in, eout = (T)h->eps_out;
  T *v = (T *)S[0], *ga = (T *)S[1], *buf = (T *)S[2];
  /* lerp_high only matters for the centered average */
  const int code = (f->centered ? (f->lerp_high ? 2 : 1) : 0) + (f->use_momentum ? 3 : 0);
  switch (code) {
    case 0: TOR_RMS_LOOP(0, 0, 0) break;
    case 1: TOR_RMS_LOOP(1, 0, 0) break;
    case 2: TOR_RMS_LOOP(1, 0, 1) break;
    case 3: TOR_RMS_LOOP(0, 1, 0) break;
    case 4: TOR_RMS_LOOP(1, 1, 0) break;
    case 5: TOR_RMS_LOOP(1, 1, 1) break;
  }
}

/* ---------------------------------------------------------------- Adam
 * S: exp_avg, exp_avg_sq, max_exp_avg_sq
 * m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g^2;  amsgrad: vm = max(vm, v)
 * w -= step_size * (m / (sqrt(v) * inv_bc2_sqrt + eps))   (one division per element)
 * (torch: step_size = lr/bc1, inv_bc2_sqrt = 1/sqrt(1-b2^t);
 *  keras epsilon-hat: step_size = lr*sqrt(1-b2^t)/bc1, inv_bc2_sqrt = 1)
 * The coefficients 1-b1, 1-b2 come from the host in double, as torch computes them: rounding
 * (T)1 - (T)b1 here instead biases every step the same way (2e-7 relative for b1 = 0.9f) and
 * was what made this kernel's float32 runs drift ~3x further from float64 than torch's; the
 * rounded reciprocal of the bias correction is harmless (measured, tests/optim/test_rounding.py).
 */
TOR_INLINE void FN(adam_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict m,
                                T *restrict v, T *restrict vm, const T omb1, const T b2, const T omb2,
                                const T ss, const T ibc2s, const T eps, const T wd, const T dm, const T kwd, const T klr,
                                const T gs, const int ams, const int hi) {
  const T b1 = (T)1 - omb1;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = TOR_LERP(m[i], gi, omb1, b1, hi);
    m[i] = mi;
    T vi = v[i] * b2 + omb2 * (gi * gi);
    v[i] = vi;
    if (ams) {
      T x = vm[i];
      vi = TOR_MAX(x, vi);
      vm[i] = vi;
    }
    w[i] = wi - ss * (mi / (TOR_SQRT(vi) * ibc2s + eps));
  }
}

#define TOR_ADAM_LOOP(AMS, HI)                                                             \
  TOR_EACH_SLICE(FN(adam_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, m + o, v + o, AMS ? vm + o : vm, \
                                 omb1, b2, omb2, ss, ibc2s, eps, wd, dm, kwd, klr, gs, AMS, HI);)

void FN(adam)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
              const struct adam_scalars *h, const struct adam_flags *f, int64_t lo, int64_t hi) {
  TOR_PROLOGUE_LOCALS(h)
  const T omb1 = (T)h->one_minus_beta1, b2 = (T)h->beta2, omb2 = (T)h->one_minus_beta2;
  const T ss = (T)h->step_size, ibc2s = (T)h->inv_bc2_sqrt, eps = (T)h->eps;
  T *m = (T *)S[0], *v = (T *)S[1], *vm = (T *)S[2];
  switch ((f->amsgrad ? 1 : 0) + (f->lerp_high ? 2 : 0)) {
    case 0: TOR_ADAM_LOOP(0, 0) break;
    case 1: TOR_ADAM_LOOP(1, 0) break;
    case 2: TOR_ADAM_LOOP(0, 1) break;
    case 3: TOR_ADAM_LOOP(1, 1) break;
  }
}

/* ---------------------------------------------------------------- NAdam
 * S: exp_avg, exp_avg_sq
 * m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g^2;  d = sqrt(v * inv_bc2) + eps
 * w += (c_g * g + c_m * m) / d     (one division per element; 1-b1, 1-b2 from the host, see Adam)
 * with c_g = -lr (1 - mu_t) / (1 - U_t), c_m = -lr mu_{t+1} / (1 - U_t mu_{t+1})
 */
TOR_INLINE void FN(nadam_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict m,
                                 T *restrict v, const T omb1, const T b2, const T omb2, const T ibc2,
                                 const T eps, const T cg, const T cm, const T wd, const T dm, const T kwd, const T klr,
                                 const T gs, const int hi) {
  const T b1 = (T)1 - omb1;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = TOR_LERP(m[i], gi, omb1, b1, hi);
    m[i] = mi;
    T vi = v[i] * b2 + omb2 * (gi * gi);
    v[i] = vi;
    T d = TOR_SQRT(vi * ibc2) + eps;
    w[i] = wi + (cg * gi + cm * mi) / d;
  }
}

#define TOR_NADAM_LOOP(HI)                                                                 \
  TOR_EACH_SLICE(FN(nadam_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, m + o, v + o, omb1, b2, omb2,  \
                                  ibc2, eps, cg, cm, wd, dm, kwd, klr, gs, HI);)

void FN(nadam)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
               const struct nadam_scalars *h, const struct nadam_flags *f, int64_t lo, int64_t hi) {
  TOR_PROLOGUE_LOCALS(h)
  const T omb1 = (T)h->one_minus_beta1, b2 = (T)h->beta2, omb2 = (T)h->one_minus_beta2;
  const T ibc2 = (T)h->inv_bc2, eps = (T)h->eps, cg = (T)h->c_g, cm = (T)h->c_m;
  T *m = (T *)S[0], *v = (T *)S[1];
  if (f->lerp_high) {
    TOR_NADAM_LOOP(1)
  } else {
    TOR_NADAM_LOOP(0)
  }
}

/* ---------------------------------------------------------------- Adamax
 * S: exp_avg, exp_inf
 * m = lerp(m, g, 1-b1);  u = max(b2*u, |g| + eps_in);  w -= clr * m / (u + eps_out)
 * (torch: eps_in = eps, eps_out = 0; keras: eps_in = 0, eps_out = eps)
 */
TOR_INLINE void FN(adamax_tensor)(int64_t len, T *restrict w, const T *restrict g,
                                  T *restrict m, T *restrict u, const T omb1, const T b2,
                                  const T clr, const T ein, const T eout, const T wd,
                                  const T dm, const T kwd, const T klr, const T gs, const int hi) {
  const T b1 = (T)1 - omb1;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = TOR_LERP(m[i], gi, omb1, b1, hi);
    m[i] = mi;
    T a = u[i] * b2, b = TOR_FABS(gi) + ein;
    T ui = TOR_MAX(a, b);
    u[i] = ui;
    w[i] = wi - clr * (mi / (ui + eout));
  }
}

#define TOR_ADAMAX_LOOP(HI)                                                                \
  TOR_EACH_SLICE(FN(adamax_tensor)(len, (T *)P[t] + i0, (const T *)G[t] + i0, m + o, u + o, omb1, b2, clr,  \
                                   ein, eout, wd, dm, kwd, klr, gs, HI);)

void FN(adamax)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
                const struct adamax_scalars *h, const struct adamax_flags *f, int64_t lo, int64_t hi) {
  TOR_PROLOGUE_LOCALS(h)
  const T omb1 = (T)h->one_minus_beta1, b2 = (T)h->beta2, clr = (T)h->clr;
  const T ein = (T)h->eps_in, eout = (T)h->eps_out;
  T *m = (T *)S[0], *u = (T *)S[1];
  if (f->lerp_high) {
    TOR_ADAMAX_LOOP(1)
  } else {
    TOR_ADAMAX_LOOP(0)
  }
}

#undef T
#undef FN
#undef TOR_MAX
#undef TOR_LERP
#undef TOR_SGD_LOOP
#undef TOR_RMS_LOOP
#undef TOR_ADAM_LOOP
#undef TOR_NADAM_LOOP
#undef TOR_ADAMAX_LOOP
#undef TOR_PROLOGUE_LOCALS
#endif
