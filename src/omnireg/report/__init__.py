"""Quality-control pictures and the offline HTML report of a registration.

* :func:`write_report`: ``report.html`` with its pictures in ``report_files/`` (fixed / moving / warped in
  three world-aligned planes, checkerboards, colour overlays, edges, deformation grid, Jacobian map,
  loss curves, metric tables);
* :func:`write_triplet`: one PNG of fixed, moving and warped side by side (e.g. for ``omnireg demo``);
* :func:`display_planes`, :func:`region_of_interest_centre`, :class:`DisplayConvention`: where the
  pictures are cut and which way they face (module :mod:`omnireg.report.views`).

Needs Matplotlib (rendered with the Agg canvas: no display needed).
"""

from .page import write_report, write_triplet
from .views import DisplayConvention, PlaneView, display_planes, region_of_interest_centre

__all__ = [
    "write_report",
    "write_triplet",
    "DisplayConvention",
    "PlaneView",
    "display_planes",
    "region_of_interest_centre",
]
