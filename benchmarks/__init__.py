"""gan_lab's benchmark, run from a checkout (not installed): `python -m benchmarks [throughput|quality|gpu]`.

- `loops`: the baselines (gan_lab's step as a plain PyTorch loop, the classic DCGAN example), step clocks;
- `graphed`: the plain loop with each whole D and G step one CUDA graph; `examples`: pytorch/examples' DCGAN;
- `measure`: statistics over repeats, FLOP counting, matmul FLOP/s (the machine: gan_lab.utils.machine);
- `contenders`: gan_lab run as a user runs it, the baselines' batches and the FID contenders' images;
- `suite`: throughput and quality; `gpu`: the GPU check; `jobs`, `repeats`, `profile`: their parts;
- `report`: results.json and results.md; `shared`: the offline CIFAR-10 copy and Inception weights of ../shared.
"""
