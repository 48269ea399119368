# Raspberry Pi 3 in 32-bit mode: ARMv7 hard-float with NEON (Cortex-A53).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
# GCC keeps float vector arithmetic off ARMv7 NEON (not IEEE: denormals flush to zero) unless
# -funsafe-math-optimizations allows it; without it every kernel ran as scalar VFP code with its
# vectors bounced through the stack (tools/arm_codegen.py showed it).
set(LAYERTUNE_ARCH_FLAGS "-mcpu=cortex-a53 -mfpu=neon-fp-armv8 -mfloat-abi=hard -funsafe-math-optimizations" CACHE STRING "" FORCE)
