// The log fuzz target's pieces, shared with the standalone driver's corpus writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "log/fault_storage.h"
#include "log/log.h"

namespace ktmfs::log::fuzz {

LogOptions TemplateOptions();
// Writes the small well-formed log the fuzz inputs are laid over.
void BuildTemplate(FaultInjectingStorage* storage);
void RunOne(const uint8_t* data, size_t size);

}  // namespace ktmfs::log::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
