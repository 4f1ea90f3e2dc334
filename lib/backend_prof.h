/* Per-op timing of a backend (RL_PROFILE=1): see backend_prof.c. */
#ifndef RLFLOW_BACKEND_PROF_H
#define RLFLOW_BACKEND_PROF_H
#include <stdbool.h>
#include <stdio.h>

#include "backend.h"

/* Whether $RL_PROFILE asks for a profile (set, not empty, not "0"). */
bool backend_prof_wanted(void);
/* bk behind the timing table (one backend per process); the report is
 * printed to stderr at exit. NULL with rl_err set on failure. */
const struct backend *backend_profiled(const struct backend *bk);
/* Print the times gathered so far, slowest op first, and start again. */
void backend_prof_report(FILE *f, const char *title);
/* Forget the times gathered so far (e.g. a warm-up's). */
void backend_prof_reset(void);
#endif
