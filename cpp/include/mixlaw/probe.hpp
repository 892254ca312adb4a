// Machine probes for benchmarks: the throughput of the scalar exp() that bounds the
// law evaluations (the "physical floor" of SPEC section 8).
#pragma once

#include <cstddef>

namespace mixlaw {

// Seconds per std::exp call over n arguments (best of `repeats` passes).
double exp_seconds_per_call(std::size_t n, int repeats);

}  // namespace mixlaw
