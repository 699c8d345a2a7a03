// Stub: replaced on merge by the actor layer's real table.c.
#include "actor_int.h"
