"""consensus/sim"""
