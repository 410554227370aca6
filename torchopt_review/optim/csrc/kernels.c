/*
 * Single-pass optimizer kernels for torchopt_review (plain C99, no torch headers).
 *
 * Each kernel updates a whole (device, dtype) bucket in one call:
 *   n        number of tensors in the bucket
 *   P[i]     pointer to the i-th parameter's memory (numel N[i], dense)
 *   G[i]     pointer to its gradient (same layout as the parameter)
 *   S[k]     base of the k-th flat state buffer; tensor i's slice starts at
 *            sum(N[0..i-1]) (state buffers are flat, params and grads are not)
 *   H        per-step scalars, computed in Python as doubles and cast to T here
 *            (as torch's CPU kernels cast their scalar arguments to the op type)
 *   F        integer flags that select a variant; they are dispatched to
 *            compile-time constants so every variant's loop vectorizes.
 *
 * Weight decay: w <- w*dm - (w*kwd)*klr, with dm = 1 - lr*wd (torch's decoupled decay) or
 * kwd = wd, klr = lr (Keras's `variable - variable * wd * lr`, same rounding); the last two
 * entries of every kernel's H are kwd and klr.
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

int torchopt_kernels_abi_version(void) { return 1; }

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

/* ---------------------------------------------------------------- SGD
 * H: lr, momentum, 1-dampening, l2 weight decay, decoupled decay factor, grad sign
 * F: use_momentum, nesterov, keras, first (momentum buffer not yet initialised)
 * torch: b = first ? g : mu*b + (1-d)*g;  u = nesterov ? g + mu*b : b;  w -= lr*u
 * keras: v = mu*v - lr*g (first: v = -lr*g);  w += nesterov ? mu*v - lr*g : v
 */
TOR_INLINE void FN(sgd_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict b,
                               const T lr, const T mu, const T damp, const T wd, const T dm, const T kwd, const T klr,
                               const T gs, const int mom, const int nest, const int keras,
                               const int first) {
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    if (!mom) {
      wi = wi - lr * gi;
    } else if (!keras) {
      T bi = first ? gi : mu * b[i] + damp * gi;
      b[i] = bi;
      T ui = nest ? gi + mu * bi : bi;
      wi = wi - lr * ui;
    } else {
      T vi = first ? -(lr * gi) : mu * b[i] - lr * gi;
      b[i] = vi;
      wi = nest ? wi + (mu * vi - lr * gi) : wi + vi;
    }
    w[i] = wi;
  }
}

#define TOR_SGD_LOOP(MOM, NEST, KERAS, FIRST)                                              \
  for (int64_t t = 0; t < n; ++t) {                                                        \
    FN(sgd_tensor)(N[t], (T *)P[t], (const T *)G[t], MOM ? b + off : b, lr, mu, damp, wd, dm, \
                   kwd, klr, gs, MOM, NEST, KERAS, FIRST);                                           \
    off += N[t];                                                                           \
  }

void FN(sgd)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
             const double *H, const int64_t *F) {
  const T lr = (T)H[0], mu = (T)H[1], damp = (T)H[2], wd = (T)H[3], dm = (T)H[4], gs = (T)H[5];
  const T kwd = (T)H[6], klr = (T)H[7];
  T *b = F[0] ? (T *)S[0] : (T *)0;
  int64_t off = 0;
  const int code = (int)(F[0] ? 1 + (F[1] ? 1 : 0) + (F[2] ? 2 : 0) + (F[3] ? 4 : 0) : 0);
  switch (code) {
    case 0: TOR_SGD_LOOP(0, 0, 0, 0) break;
    case 1: TOR_SGD_LOOP(1, 0, 0, 0) break;
    case 2: TOR_SGD_LOOP(1, 1, 0, 0) break;
    case 3: TOR_SGD_LOOP(1, 0, 1, 0) break;
    case 4: TOR_SGD_LOOP(1, 1, 1, 0) break;
    case 5: TOR_SGD_LOOP(1, 0, 0, 1) break;
    case 6: TOR_SGD_LOOP(1, 1, 0, 1) break;
    case 7: TOR_SGD_LOOP(1, 0, 1, 1) break;
    case 8: TOR_SGD_LOOP(1, 1, 1, 1) break;
  }
}

/* ---------------------------------------------------------------- Adagrad
 * H: clr, l2 weight decay, decoupled decay factor, grad sign, eps_in, eps_out
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
                 const double *H, const int64_t *F) {
  (void)F;
  const T clr = (T)H[0], wd = (T)H[1], dm = (T)H[2], gs = (T)H[3], ein = (T)H[4], eout = (T)H[5];
  const T kwd = (T)H[6], klr = (T)H[7];
  T *s = (T *)S[0];
  int64_t off = 0;
  for (int64_t t = 0; t < n; ++t) {
    FN(adagrad_tensor)(N[t], (T *)P[t], (const T *)G[t], s + off, clr, wd, dm, kwd, klr, gs,
                       ein, eout);
    off += N[t];
  }
}

/* ---------------------------------------------------------------- RMSprop
 * H: alpha, c_in, c_out, momentum, l2 weight decay, decoupled decay factor, grad sign,
 *    eps_in, eps_out
 * F: centered, use_momentum.   S: square_avg, grad_avg, momentum_buffer
 * v = a*v + (1-a)*g^2;  centered: gbar += (1-a)*(g - gbar), D = v - gbar^2 else D = v
 * inc = c_in * g / (sqrt(D + eps_in) + eps_out)
 * momentum: buf = mu*buf + inc, w -= c_out*buf;  else w -= c_out*inc
 * (torch: c_in = 1, c_out = lr, eps outside; keras: c_in = lr, c_out = 1, eps inside)
 */
TOR_INLINE void FN(rmsprop_tensor)(int64_t len, T *restrict w, const T *restrict g,
                                   T *restrict v, T *restrict ga, T *restrict buf, const T a,
                                   const T cin, const T cout, const T mu, const T wd,
                                   const T dm, const T kwd, const T klr, const T gs, const T ein, const T eout,
                                   const int centered, const int mom) {
  const T oma = (T)1 - a;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T vi = v[i] * a + oma * (gi * gi);
    v[i] = vi;
    T d = vi;
    if (centered) {
      T gai = ga[i] + oma * (gi - ga[i]);
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

#define TOR_RMS_LOOP(C, M)                                                                 \
  for (int64_t t = 0; t < n; ++t) {                                                        \
    FN(rmsprop_tensor)(N[t], (T *)P[t], (const T *)G[t], v + off, C ? ga + off : ga,       \
                       M ? buf + off : buf, a, cin, cout, mu, wd, dm, kwd, klr, gs, ein, eout, C, M); \
    off += N[t];                                                                           \
  }

void FN(rmsprop)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
                 const double *H, const int64_t *F) {
  const T a = (T)H[0], cin = (T)H[1], cout = (T)H[2], mu = (T)H[3], wd = (T)H[4], dm = (T)H[5],
          gs = (T)H[6], ein = (T)H[7], eout = (T)H[8];
  const T kwd = (T)H[9], klr = (T)H[10];
  T *v = (T *)S[0], *ga = (T *)S[1], *buf = (T *)S[2];
  int64_t off = 0;
  const int code = (F[0] ? 1 : 0) + (F[1] ? 2 : 0);
  switch (code) {
    case 0: TOR_RMS_LOOP(0, 0) break;
    case 1: TOR_RMS_LOOP(1, 0) break;
    case 2: TOR_RMS_LOOP(0, 1) break;
    case 3: TOR_RMS_LOOP(1, 1) break;
  }
}

/* ---------------------------------------------------------------- Adam
 * H: beta1, beta2, step_size, 1/bc2_sqrt, eps, l2 weight decay, decoupled decay factor, grad sign
 * F: amsgrad.   S: exp_avg, exp_avg_sq, max_exp_avg_sq
 * m += (1-b1)(g - m);  v = b2*v + (1-b2)*g^2;  amsgrad: vm = max(vm, v)
 * w -= step_size * m / (sqrt(v) * (1/bc2_sqrt) + eps)   (one division per element)
 * (torch: step_size = lr/bc1, bc2_sqrt = sqrt(1-b2^t);
 *  keras epsilon-hat: step_size = lr*sqrt(1-b2^t)/bc1, 1/bc2_sqrt = 1)
 */
TOR_INLINE void FN(adam_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict m,
                                T *restrict v, T *restrict vm, const T b1, const T b2,
                                const T ss, const T ibc2s, const T eps, const T wd, const T dm, const T kwd, const T klr,
                                const T gs, const int ams) {
  const T omb1 = (T)1 - b1, omb2 = (T)1 - b2;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = m[i] + omb1 * (gi - m[i]);
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

void FN(adam)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
              const double *H, const int64_t *F) {
  const T b1 = (T)H[0], b2 = (T)H[1], ss = (T)H[2], ibc2s = (T)H[3], eps = (T)H[4], wd = (T)H[5],
          dm = (T)H[6], gs = (T)H[7];
  const T kwd = (T)H[8], klr = (T)H[9];
  T *m = (T *)S[0], *v = (T *)S[1], *vm = (T *)S[2];
  int64_t off = 0;
  if (F[0]) {
    for (int64_t t = 0; t < n; ++t) {
      FN(adam_tensor)(N[t], (T *)P[t], (const T *)G[t], m + off, v + off, vm + off, b1, b2, ss,
                      ibc2s, eps, wd, dm, kwd, klr, gs, 1);
      off += N[t];
    }
  } else {
    for (int64_t t = 0; t < n; ++t) {
      FN(adam_tensor)(N[t], (T *)P[t], (const T *)G[t], m + off, v + off, vm, b1, b2, ss, ibc2s,
                      eps, wd, dm, kwd, klr, gs, 0);
      off += N[t];
    }
  }
}

/* ---------------------------------------------------------------- NAdam
 * H: beta1, beta2, 1/bc2, eps, c_g, c_m, l2 weight decay, decoupled decay factor, grad sign
 * S: exp_avg, exp_avg_sq
 * m += (1-b1)(g - m);  v = b2*v + (1-b2)*g^2;  d = sqrt(v * (1/bc2)) + eps
 * w += (c_g * g + c_m * m) / d     (one division per element)
 * with c_g = -lr (1 - mu_t) / (1 - U_t), c_m = -lr mu_{t+1} / (1 - U_t mu_{t+1})
 */
TOR_INLINE void FN(nadam_tensor)(int64_t len, T *restrict w, const T *restrict g, T *restrict m,
                                 T *restrict v, const T b1, const T b2, const T ibc2,
                                 const T eps, const T cg, const T cm, const T wd, const T dm, const T kwd, const T klr,
                                 const T gs) {
  const T omb1 = (T)1 - b1, omb2 = (T)1 - b2;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = m[i] + omb1 * (gi - m[i]);
    m[i] = mi;
    T vi = v[i] * b2 + omb2 * (gi * gi);
    v[i] = vi;
    T d = TOR_SQRT(vi * ibc2) + eps;
    w[i] = wi + (cg * gi + cm * mi) / d;
  }
}

void FN(nadam)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
               const double *H, const int64_t *F) {
  (void)F;
  const T b1 = (T)H[0], b2 = (T)H[1], ibc2 = (T)H[2], eps = (T)H[3], cg = (T)H[4], cm = (T)H[5],
          wd = (T)H[6], dm = (T)H[7], gs = (T)H[8];
  const T kwd = (T)H[9], klr = (T)H[10];
  T *m = (T *)S[0], *v = (T *)S[1];
  int64_t off = 0;
  for (int64_t t = 0; t < n; ++t) {
    FN(nadam_tensor)(N[t], (T *)P[t], (const T *)G[t], m + off, v + off, b1, b2, ibc2, eps, cg,
                     cm, wd, dm, kwd, klr, gs);
    off += N[t];
  }
}

/* ---------------------------------------------------------------- Adamax
 * H: beta1, beta2, clr, eps_in, eps_out, l2 weight decay, decoupled decay factor, grad sign
 * S: exp_avg, exp_inf
 * m += (1-b1)(g - m);  u = max(b2*u, |g| + eps_in);  w -= clr * m / (u + eps_out)
 * (torch: eps_in = eps, eps_out = 0; keras: eps_in = 0, eps_out = eps)
 */
TOR_INLINE void FN(adamax_tensor)(int64_t len, T *restrict w, const T *restrict g,
                                  T *restrict m, T *restrict u, const T b1, const T b2,
                                  const T clr, const T ein, const T eout, const T wd,
                                  const T dm, const T kwd, const T klr, const T gs) {
  const T omb1 = (T)1 - b1;
  TOR_SIMD
  for (int64_t i = 0; i < len; ++i) {
    T wi = w[i] * dm - (w[i] * kwd) * klr;
    T gi = gs * g[i] + wd * wi;
    T mi = m[i] + omb1 * (gi - m[i]);
    m[i] = mi;
    T a = u[i] * b2, b = TOR_FABS(gi) + ein;
    T ui = TOR_MAX(a, b);
    u[i] = ui;
    w[i] = wi - clr * (mi / (ui + eout));
  }
}

void FN(adamax)(int64_t n, void *const *P, void *const *G, const int64_t *N, void *const *S,
                const double *H, const int64_t *F) {
  (void)F;
  const T b1 = (T)H[0], b2 = (T)H[1], clr = (T)H[2], ein = (T)H[3], eout = (T)H[4], wd = (T)H[5],
          dm = (T)H[6], gs = (T)H[7];
  const T kwd = (T)H[8], klr = (T)H[9];
  T *m = (T *)S[0], *u = (T *)S[1];
  int64_t off = 0;
  for (int64_t t = 0; t < n; ++t) {
    FN(adamax_tensor)(N[t], (T *)P[t], (const T *)G[t], m + off, u + off, b1, b2, clr, ein,
                      eout, wd, dm, kwd, klr, gs);
    off += N[t];
  }
}

#undef T
#undef FN
#undef TOR_MAX
#endif
