"""crop"""
