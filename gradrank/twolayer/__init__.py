"""twolayer"""
