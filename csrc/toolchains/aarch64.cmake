# 64-bit ARM (Raspberry Pi 3/4 in 64-bit mode and other Cortex-A53-class boards).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(LAYERTUNE_ARCH_FLAGS "-mcpu=cortex-a53" CACHE STRING "" FORCE)
