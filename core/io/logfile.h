/* logfile.h: what the writers of run logs (tensorboard.c) share with logfile.c besides the
 * public tc_logfile API of tocha_io.h: growable byte buffers, and deferred units. */
#ifndef TOCHA_IO_LOGFILE_H
#define TOCHA_IO_LOGFILE_H

#include "tocha.h"
#include "tocha_io.h"

/* a growable byte buffer; {0} is empty */
typedef struct {
    unsigned char *data;
    size_t len, cap;
    bool oom; /* an allocation failed: every later write is dropped, the owner reports it */
} tc_buf;

void tc_buf_reserve(tc_buf *b, size_t extra);
void tc_buf_put(tc_buf *b, const void *p, size_t n);
void tc_buf_free(tc_buf *b);

/* a unit encoded when it is flushed, off the caller's thread (a PNG image): `encode` appends its
 * bytes, and they go at byte `at` of the pending buffer */
typedef struct tc_logjob {
    struct tc_logjob *next;
    size_t at, size_hint;
    int (*encode)(struct tc_logjob *j, tc_buf *out);
    void (*free)(struct tc_logjob *j);
} tc_logjob;

/* tc_logfile_open for a file that must not exist yet (O_EXCL): an event file of its own */
tc_logfile *tc_logfile_create(const char *path, double flush_secs);
/* queues a job as the file's next unit (taking it, also on failure: then j->free(j)) */
int tc_logfile_defer(tc_logfile *f, tc_logjob *j);

#endif
