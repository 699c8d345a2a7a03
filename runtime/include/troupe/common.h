// troupe/common.h: what every public header shares: the export macro, the
// standard includes, and the small helpers that the await macros use.
#ifndef TROUPE_COMMON_H
#define TROUPE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(TR_STATIC_BUILD) || !defined(__GNUC__)
#define TR_API
#else
#define TR_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
#define TR_BEGIN_DECLS extern "C" {
#define TR_END_DECLS }
#else
#define TR_BEGIN_DECLS
#define TR_END_DECLS
#endif

#define TR_VERSION_MAJOR 0
#define TR_VERSION_MINOR 1
#define TR_VERSION_PATCH 0

#endif
