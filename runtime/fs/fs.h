// fs/fs.h: the file-system layer (README, Architecture): regular-file IO
// as awaitables on the blocking pool (fs.c; public: troupe/fs.h). Its file
// shares nothing with others beyond the pool's jobs (io/io.h) today.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include every layer below it and io/io.h (the blocking pool
// runs its jobs). No back-edge.
#ifndef TR_FS_FS_H
#define TR_FS_FS_H

#include "io/io.h"

#endif
