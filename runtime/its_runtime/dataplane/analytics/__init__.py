"""Traffic analytics on detections: tracking, line crossings, occupancy, speed, counts.

Everything here is plain numpy on normalised coordinates, per camera, synchronous and
deterministic: the same detections always give the same events, which is what lets
the tests hold it to exact ground truth. Objects are placed by the bottom centre of
their box (where a vehicle meets the road), as DeepStream's nvdsanalytics does.
"""
