// troupe/troupe.h: the whole public API of libtroupe in one include.
#ifndef TROUPE_TROUPE_H
#define TROUPE_TROUPE_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>
#include <troupe/rt.h>
#include <troupe/chan.h>
#include <troupe/mailbox.h>
#include <troupe/time.h>
#include <troupe/io.h>
#include <troupe/net.h>
#include <troupe/bufread.h>
#include <troupe/blocking.h>
#include <troupe/fs.h>
#include <troupe/signal.h>
#include <troupe/process.h>
#include <troupe/sync.h>
#include <troupe/group.h>
#include <troupe/select.h>
#include <troupe/executor.h>

#endif
