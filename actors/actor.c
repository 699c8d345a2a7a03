// Stub: replaced on merge by the actor layer's real actor.c.
#include "actor_int.h"
