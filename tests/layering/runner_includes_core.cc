// Must not compile: dependencies run one way, core -> runner, never back.
#include "core/copy_plan.h"
