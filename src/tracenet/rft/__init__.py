"""Receptive Field Tracer: exact cropped inference for ConvNets (paper section III-A).

    plan = trace(model, input_shape=(1, 3, H, W), targets={key: (y0, y1, x0, x1)})
    out = plan.run(x)                    # {key: full_output[key][..., y0:y1, x0:x1]}
    out = plan.run(x, cache=RegionCache())

See docs/rft.md for the algorithm, the exactness argument and the rule table.
"""

from tracenet.rft.cache import RegionCache
from tracenet.rft.planner import TracePlan, trace

__all__ = ["RegionCache", "TracePlan", "trace"]
