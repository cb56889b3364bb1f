"""gan_lab's benchmark: `python -m gan_lab.bench` (throughput) and `python -m gan_lab.bench quality`.

- `loops`: the baselines (gan_lab's step as a plain PyTorch loop, the classic DCGAN example), step clocks;
- `measure`: statistics over repeats, FLOP counting, matmul FLOP/s, the machine's description;
- `contenders`: gan_lab run as a user runs it, the baselines' batches and the FID contenders' images;
- `suite`: the two commands' measurements; `report`: results.json, results.md and the README section;
- `shared`: the offline CIFAR-10 copy and Inception weights of ../shared.
"""
