"""Evaluation: VSI-Bench, ScanQA and SQA3D metrics and runners."""
