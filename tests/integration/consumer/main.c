// The packaging test's consumer: includes the installed headers, calls one
// libtroupe function and exits 0 if it answered as documented.
#include <stdio.h>
#include <string.h>

#include <troupe/troupe.h>

int
main(void)
{
    const char *s = tr_strerror(TR_ECLOSED);
    if (s == NULL || strcmp(s, "closed") != 0) {
        fprintf(stderr, "tr_strerror(TR_ECLOSED) = \"%s\", want \"closed\"\n", s ? s : "(null)");
        return 1;
    }
    printf("tr_strerror(TR_ECLOSED) = \"%s\"\n", s);
    return 0;
}
