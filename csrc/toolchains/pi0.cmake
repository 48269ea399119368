# Raspberry Pi Zero / 1: ARMv6 with VFP. Debian's armhf libraries are ARMv7, so this uses the
# armel compiler with the hard-float instructions in the soft-float ABI, linked statically.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv6l)
set(CMAKE_CXX_COMPILER arm-linux-gnueabi-g++)
set(LAYERTUNE_ARCH_FLAGS "-march=armv6zk -mfpu=vfp -mfloat-abi=softfp -marm" CACHE STRING "" FORCE)
